"""The attempt loop of one call, written once, as steps a shell carries out (sans-IO).

``attempt_steps(plan, errors, classify)`` is a generator: it yields what to do next and
is told what happened. Every decision is made here or in the plan
(consul_discovery.client.attempt); a shell only carries out the I/O of each step, with
its own transport, blocking or awaiting (consul_discovery.client.drivers)::

    Send(endpoint)    send the call's request to this endpoint once; resume the loop
                      with the response (``steps.send``) as soon as its status and
                      headers are in, or with the exception it raised (``steps.throw``:
                      transport errors, cancellation, interrupts alike)
    Release(resp)     a later answer supersedes ``resp``: close it
    Park(resp)        a retry follows: free ``resp``'s connection but keep it usable (it
                      is the answer if no later attempt gets one); resume with it
                      (a transport error while releasing or parking is thrown in too:
                      the answer is dropped and the loop goes on)
    Sleep(seconds)    wait before the next attempt
    Done(resp)        the call's result; a call that got no answer at all raises instead
                      (NoHealthyInstanceError or AllAttemptsFailedError, from the loop)

A response is anything with ``status_code`` and case-insensitive ``headers``
(requests', httpx'). ``errors`` are the transport's exception classes and ``classify``
says where in the exchange one happened (``retry.ErrorKind``); a FATAL one (the caller's
mistake) is re-raised as is, and anything else thrown in (a cancellation, an interrupt)
abandons the attempt, keeping the in-flight count right, and propagates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import Any

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.load import Endpoint
from consul_discovery.client.retry import ErrorKind

Classify = Callable[[BaseException], ErrorKind]


class Send:
    """Send the request to ``endpoint`` once."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint


class Release:
    """Close ``response``: a later answer superseded it."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response


class Park:
    """Free ``response``'s connection before a retry, keeping its answer readable."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response


class Sleep:
    """Wait ``seconds`` before the next attempt."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Done:
    """The call is over: ``response`` is its answer."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response


Step = Send | Release | Park | Sleep | Done


_NOT_PICKED: Any = object()


def attempt_steps(
    plan: AttemptPlan,
    errors: tuple[type[BaseException], ...],
    classify: Classify,
    picked: Endpoint | None = _NOT_PICKED,
) -> Generator[Step, Any, None]:
    """The loop: pick, send, account, decide, retry; see the module docstring.

    ``picked``: the first attempt's ``plan.next_endpoint()``, when the driver already
    picked it (``resume_steps``); the loop then starts from that pick.
    """
    response: Any = None
    while True:
        if picked is _NOT_PICKED:
            endpoint = plan.next_endpoint()
        else:
            endpoint, picked = picked, _NOT_PICKED
        if endpoint is not None:
            try:
                answer = yield Send(endpoint)
            except errors as exc:
                kind = classify(exc)
                plan.failed(kind, exc)
                if kind is ErrorKind.FATAL:
                    raise
            except BaseException:  # a cancellation, an interrupt, a failing hook
                plan.abandon()
                raise
            else:
                plan.answered(answer.status_code, answer.headers)
                if response is not None:
                    # Closing a superseded answer may fail: it is gone either way.
                    with contextlib.suppress(*errors):
                        yield Release(response)
                response = answer
        if not plan.decide():
            break
        if response is not None:
            try:
                response = yield Park(response)
            except errors:
                response = None  # its body could not be read: no answer to keep
        yield Sleep(plan.delay)
    if response is None:
        plan.raise_failure()
    yield Done(response)


def resume_steps(
    plan: AttemptPlan,
    errors: tuple[type[BaseException], ...],
    classify: Classify,
    endpoint: Endpoint | None,
    answer: Any = None,
    error: BaseException | None = None,
) -> tuple[Generator[Step, Any, None], Step]:
    """The loop and its next step, entered after a driver made the first attempt itself.

    Drivers send a call's first attempt without the loop (``endpoint`` is the plan's
    first ``next_endpoint()``), and return an answer the plan calls final at once
    (``AttemptPlan.settled``: ``decide``'s first rule). Anything else comes
    here: the attempt's ``answer`` or ``error`` is handed to the loop as if it had yielded
    ``Send(endpoint)`` for it (no endpoint: the loop decides what an empty pick means).
    """
    steps = attempt_steps(plan, errors, classify, endpoint)
    step = next(steps)
    if endpoint is None:
        return steps, step
    if error is not None:
        return steps, steps.throw(error)
    return steps, steps.send(answer)
