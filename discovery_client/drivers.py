"""The two drivers: carry out a call's steps on a thread (blocking) or a task (awaiting).

A driver is all that differs between I/O styles; what a call does is decided by the core
(consul_discovery.client.core: route, readiness, plan) and its one attempt loop
(consul_discovery.client.steps). ``SyncDriver`` serves the requests shell (ServiceClient,
DiscoveryAdapter) and the sync httpx transport; ``AsyncDriver`` the asyncio httpx
transport. Each call:

1. takes the start time (the deadline runs from it) and the Route of the service;
2. if its Target is not resolved yet, waits for the first Resolution (``resolve``,
   blocking or awaited, at most ``core.first_wait``) and hands it to the Target's state;
   a service whose chain is not known yet (``core.chain_gate``) waits for it the same
   way (consul_discovery.client.chain.gate); after either wait it takes its Route
   again (a chain that came while it waited may route it elsewhere);
   a Connect target waits for the caller's mesh identity the same way (``core.connect``);
3. sends the first attempt itself (``send(endpoint, plan)``; the plan caps its
   timeouts) and returns an answer the plan calls final (most calls end there, without
   the loop's machinery); otherwise hands the outcome to the loop
   (``steps.resume_steps``) and carries out its steps: ``send`` again,
   ``shell.release``/``shell.park`` superseded answers, ``sleep`` between attempts;
   anything a step raises is thrown into the loop, which decides what it means.

A shell is the transport's side: its exception classes (``errors``), ``classify`` (where
in the exchange one happened), ``release`` and ``park`` (blocking or async).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.core import DiscoveryCore
from consul_discovery.client.errors import DiscoveryError
from consul_discovery.client.instance import Resolution
from consul_discovery.client.load import Endpoint
from consul_discovery.client.retry import ErrorKind, RetryPolicy
from consul_discovery.client.route import RequestView
from consul_discovery.client.state import TargetState
from consul_discovery.client.steps import Done, Release, Send, Sleep, resume_steps

R = TypeVar("R")


class SyncShell(Protocol[R]):
    """A blocking transport's side of the loop."""

    errors: tuple[type[BaseException], ...]

    def classify(self, error: BaseException) -> ErrorKind:
        """Where in the exchange ``error`` happened."""
        ...

    def release(self, response: R) -> None:
        """Close a superseded answer."""
        ...

    def park(self, response: R) -> R:
        """Free the answer's connection before a retry; return it still readable."""
        ...


class AsyncShell(Protocol[R]):
    """An asyncio transport's side of the loop."""

    errors: tuple[type[BaseException], ...]

    def classify(self, error: BaseException) -> ErrorKind:
        """Where in the exchange ``error`` happened."""
        ...

    async def release(self, response: R) -> None:
        """Close a superseded answer."""
        ...

    async def park(self, response: R) -> R:
        """Free the answer's connection before a retry; return it still readable."""
        ...


class SyncDriver(Generic[R]):
    """Runs calls on the calling thread: blocks for readiness and between attempts."""

    def __init__(
        self,
        core: DiscoveryCore,
        resolve: Callable[..., Resolution],
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.core = core
        self.resolve = resolve  # source.resolve(key, timeout=...): blocks at most timeout
        self.sleep = sleep

    def ready(self, state: TargetState, started: float, retry: RetryPolicy | None = None) -> None:
        """Make sure ``state`` has a first Resolution, waiting at most ``core.first_wait``."""
        if not state.ready:
            wait = self.core.first_wait(started, retry)
            try:
                state.adopt(self.resolve(state.target, timeout=wait))
            except DiscoveryError:  # no set to pick from: counted, as a pick that fails
                state.call_failed(no_instance=True)
                raise

    def call(
        self,
        service: str,
        request: RequestView,
        shell: SyncShell[R],
        send: Callable[[Endpoint, AttemptPlan], R],
        replayable: bool,
        retry: RetryPolicy | None = None,
    ) -> R:
        """One call to ``service``: the answer of its final attempt, or raise.

        ``replayable``: false for a body that cannot be sent twice; ``retry`` overrides
        the route's and the client's policy (positional: a call per request).
        """
        core = self.core
        started = core.clock()
        route = core.route(service, request)
        state = route.states[0]
        waited = state.balancer.resolution is None
        if waited:
            self.ready(state, started, retry)
        gate = core.chain_gate(service, state) if core.gates else None
        if gate is not None:  # a first call: routed once its chain (or none) is known
            gate.wait(core.first_wait(started, retry))
        if waited or gate is not None:  # its chain may have come meanwhile: route again
            route = core.route(service, request)
            state = route.states[0]
            if state.balancer.resolution is None:
                self.ready(state, started, retry)
        if state.target.connect and not core.connect.ready:  # like a first resolve
            core.connect.wait_ready(core.first_wait(started, retry))
        plan = core.plan(route, request, replayable, retry, started)
        endpoint = plan.next_endpoint()
        if endpoint is None:  # nothing to pick: the loop says what that means
            steps, step = resume_steps(plan, shell.errors, shell.classify, None)
        else:  # the first attempt, without the loop unless it needs one
            try:
                answer = send(endpoint, plan)
            except BaseException as exc:  # the loop decides what it means
                steps, step = resume_steps(plan, shell.errors, shell.classify, endpoint,
                                           error=exc)  # fmt: skip
            else:
                # the common case: an answer no retry can follow, handed in at once
                if plan.settled(answer.status_code, answer.headers):  # type: ignore[attr-defined]
                    return answer
                steps, step = resume_steps(plan, shell.errors, shell.classify, endpoint,
                                           answer)  # fmt: skip
        while True:
            kind = type(step)
            if kind is Send:
                try:
                    answer = send(step.endpoint, plan)  # type: ignore[union-attr]
                except BaseException as exc:  # the loop decides what it means
                    step = steps.throw(exc)
                else:
                    step = steps.send(answer)
                    if type(step) is Done:  # the common case: the first answer is final
                        return step.response  # type: ignore[union-attr]
            elif kind is Done:
                return step.response  # type: ignore[union-attr]
            elif kind is Sleep:
                self.sleep(step.seconds)  # type: ignore[union-attr]
                step = next(steps)
            else:  # Release or Park
                try:
                    if kind is Release:
                        shell.release(step.response)  # type: ignore[union-attr]
                        answer = None
                    else:
                        answer = shell.park(step.response)  # type: ignore[union-attr]
                except BaseException as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(answer)


class AsyncDriver(Generic[R]):
    """Runs calls on the event loop: awaits readiness and between attempts, never blocks."""

    def __init__(
        self,
        core: DiscoveryCore,
        resolve: Callable[..., Awaitable[Resolution]],
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.core = core
        self.resolve = resolve  # await source.resolve(key, timeout=...)
        self.sleep = sleep

    async def ready(
        self, state: TargetState, started: float, retry: RetryPolicy | None = None
    ) -> None:
        """Make sure ``state`` has a first Resolution, awaiting at most ``core.first_wait``."""
        if not state.ready:
            wait = self.core.first_wait(started, retry)
            try:
                state.adopt(await self.resolve(state.target, timeout=wait))
            except DiscoveryError:  # no set to pick from: counted, as a pick that fails
                state.call_failed(no_instance=True)
                raise

    async def call(
        self,
        service: str,
        request: RequestView,
        shell: AsyncShell[R],
        send: Callable[[Endpoint, AttemptPlan], Awaitable[R]],
        replayable: bool,
        retry: RetryPolicy | None = None,
    ) -> R:
        """One call to ``service``: the answer of its final attempt, or raise.

        ``replayable``: false for a body that cannot be sent twice; ``retry`` overrides
        the route's and the client's policy (positional: a call per request).
        """
        core = self.core
        started = core.clock()
        route = core.route(service, request)
        state = route.states[0]
        waited = state.balancer.resolution is None
        if waited:
            await self.ready(state, started, retry)
        gate = core.chain_gate(service, state) if core.gates else None
        if gate is not None:  # a first call: routed once its chain (or none) is known
            await gate.await_open(core.first_wait(started, retry))
        if waited or gate is not None:  # its chain may have come meanwhile: route again
            route = core.route(service, request)
            state = route.states[0]
            if state.balancer.resolution is None:
                await self.ready(state, started, retry)
        if state.target.connect and not core.connect.ready:  # like a first resolve
            await core.connect.await_ready(core.first_wait(started, retry))
        plan = core.plan(route, request, replayable, retry, started)
        endpoint = plan.next_endpoint()
        if endpoint is None:  # nothing to pick: the loop says what that means
            steps, step = resume_steps(plan, shell.errors, shell.classify, None)
        else:  # the first attempt, without the loop unless it needs one
            try:
                answer = await send(endpoint, plan)
            except BaseException as exc:  # a cancellation too: the loop abandons
                steps, step = resume_steps(plan, shell.errors, shell.classify, endpoint,
                                           error=exc)  # fmt: skip
            else:
                # the common case: an answer no retry can follow, handed in at once
                if plan.settled(answer.status_code, answer.headers):  # type: ignore[attr-defined]
                    return answer
                steps, step = resume_steps(plan, shell.errors, shell.classify, endpoint,
                                           answer)  # fmt: skip
        while True:
            kind = type(step)
            if kind is Send:
                try:
                    answer = await send(step.endpoint, plan)  # type: ignore[union-attr]
                except BaseException as exc:  # a cancellation too: the loop abandons
                    step = steps.throw(exc)
                else:
                    step = steps.send(answer)
                    if type(step) is Done:  # the common case: the first answer is final
                        return step.response  # type: ignore[union-attr]
            elif kind is Done:
                return step.response  # type: ignore[union-attr]
            elif kind is Sleep:
                await self.sleep(step.seconds)  # type: ignore[union-attr]
                step = next(steps)
            else:  # Release or Park
                try:
                    if kind is Release:
                        await shell.release(step.response)  # type: ignore[union-attr]
                        answer = None
                    else:
                        answer = await shell.park(step.response)  # type: ignore[union-attr]
                except BaseException as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(answer)
