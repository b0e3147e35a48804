"""ServiceClient against tiny real HTTP servers in threads, with a static instance source."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
import requests
from prometheus_client import generate_latest
from werkzeug.wrappers import Response

from consul_discovery.client import (
    AllAttemptsFailedError,
    ConsulSource,
    NoHealthyInstanceError,
    RetryPolicy,
    ServiceClient,
    ServiceConfig,
    UnknownServiceError,
)
from tests.discovery_client.fakes import (
    FakeClock,
    StaticSource,
    closed_port,
    http_backend,
    instance,
    ok,
    resolution,
    status,
)


def client_for(*ports: int, policy: str = "round_robin", clock=None, **kw) -> ServiceClient:
    """A client over instances i1..iN of ``svc`` on the given loopback ports."""
    clock = clock or FakeClock()
    res = resolution(*(instance(n, port=p) for n, p in enumerate(ports, 1)), fetched_at=clock())
    kw.setdefault("sleep", clock.sleep if isinstance(clock, FakeClock) else time.sleep)
    return ServiceClient(
        source=StaticSource(res),
        default_config=ServiceConfig(policy=policy),
        clock=clock,
        rng=random.Random(3),
        **kw,
    )


def test_three_instances_share_traffic_exactly_under_round_robin():
    with (
        http_backend(ok("a")) as a,
        http_backend(ok("b")) as b,
        http_backend(ok("c")) as c,
        client_for(a.port, b.port, c.port) as client,
    ):
        bodies = Counter(client.get("svc", "/hello").text for _ in range(30))
    assert bodies == {"a": 10, "b": 10, "c": 10}
    assert a.requests[0][:2] == ("GET", "/hello?")


def test_query_headers_and_json_pass_through():
    def echo(req):
        return Response(f"{req.args['q']}|{req.headers['X-Trace']}|{req.get_data(as_text=True)}")

    with http_backend(echo) as a, client_for(a.port) as client:
        r = client.post("svc", "/x", params={"q": "1"}, headers={"X-Trace": "t"}, json={"k": 2})
    assert r.text == '1|t|{"k": 2}'


def test_refused_connections_fail_over_for_any_method():
    dead = closed_port()
    with http_backend(ok("b")) as b, client_for(dead, b.port) as client:
        results = [client.post("svc", "/", data=b"x").status_code for _ in range(10)]
        snap = client.stats().target("svc")
    assert results == [200] * 10
    assert b.hits == 10
    assert snap.instance("i1").failures >= 1
    assert snap.retries == snap.instance("i1").failures


def test_post_without_idempotency_key_is_not_retried_once_sent():
    with (
        http_backend(status(503)) as a,
        http_backend(ok("b")) as b,
        client_for(a.port, b.port) as client,
    ):
        codes = Counter(client.post("svc", "/", data=b"x").status_code for _ in range(10))
    assert codes == {503: 5, 200: 5}  # a 503 comes back as is
    assert a.hits + b.hits == 10  # and nothing was sent twice


def test_post_with_idempotency_key_is_retried_on_another_instance():
    key = {"Idempotency-Key": "order-17"}
    with (
        http_backend(status(503)) as a,
        http_backend(ok("b")) as b,
        client_for(a.port, b.port) as client,
    ):
        codes = Counter(
            client.post("svc", "/", data=b"x", headers=key).status_code for _ in range(10)
        )
    assert codes == {200: 10}
    assert a.hits == 5 and b.hits == 10
    assert all(h.get("Idempotency-Key") == "order-17" for _, _, h in a.requests + b.requests)


def test_get_is_retried_on_a_different_instance_each_time():
    with (
        http_backend(status(502)) as a,
        http_backend(status(504)) as b,
        http_backend(ok("c")) as c,
        client_for(a.port, b.port, c.port, retry=RetryPolicy(max_attempts=3)) as client,
    ):
        assert all(client.get("svc", "/").text == "c" for _ in range(9))
    # Each call tries every instance at most once before c answers.
    assert a.hits <= 9 and b.hits <= 9 and c.hits == 9


def test_500_and_404_are_returned_as_is_without_retry():
    with http_backend(status(500)) as a, client_for(a.port) as client:
        assert client.get("svc", "/").status_code == 500
        assert client.delete("svc", "/").status_code == 500
    assert a.hits == 2
    with http_backend(status(404)) as a, client_for(a.port) as client:
        assert client.put("svc", "/", data=b"x").status_code == 404
    assert a.hits == 1


def test_a_short_retry_after_is_honoured():
    clock = FakeClock()
    policy = RetryPolicy(max_retry_after=2.0)
    with (
        http_backend(status(503, {"Retry-After": "2"})) as a,
        http_backend(ok("b")) as b,
        client_for(a.port, b.port, clock=clock, retry=policy) as client,
    ):
        assert [client.get("svc", "/").text for _ in range(2)] == ["b", "b"]
    assert clock.sleeps == [2.0]  # exactly one call met a first, waited as asked
    assert a.hits == 1 and b.hits == 2


def test_retry_after_beyond_the_deadline_returns_the_response():
    clock = FakeClock()
    with (
        http_backend(status(429, {"Retry-After": "120"})) as a,
        client_for(a.port, clock=clock, retry=RetryPolicy(deadline=5)) as client,
    ):
        r = client.get("svc", "/")
    assert r.status_code == 429 and r.headers["Retry-After"] == "120"
    assert clock.sleeps == [] and a.hits == 1


def test_a_long_retry_after_returns_the_answer_at_once_without_sleeping():
    clock = FakeClock()
    with (
        http_backend(status(503, {"Retry-After": "1"})) as a,
        http_backend(ok("b")) as b,
        client_for(a.port, b.port, clock=clock) as client,
    ):
        first = client.post("svc", "/", headers={"Idempotency-Key": "k"})
    assert first.status_code == 503 and first.headers["Retry-After"] == "1"
    assert clock.sleeps == [] and a.hits == 1 and b.hits == 0


def test_a_relayed_dependency_failure_is_neither_retried_nor_held_against_the_instance():
    clock = FakeClock()
    relayed = status(503, {"Retry-After": "0", "Failure-Origin": "dependency"})
    with (
        http_backend(relayed) as a,
        http_backend(relayed) as b,
        client_for(a.port, b.port, clock=clock) as client,
    ):
        codes = Counter(
            client.post("svc", "/", headers={"Idempotency-Key": f"k{n}"}).status_code
            for n in range(20)
        )
        snap = client.stats().target("svc")
    assert codes == {503: 20}
    assert a.hits + b.hits == 20 and clock.sleeps == []  # one attempt per call, no wait
    assert snap.retries == 0 and snap.ejections == 0
    assert all(i.failures == 0 for i in snap.instances)


def test_the_instance_s_own_503_still_counts_and_ejects():
    clock = FakeClock()
    with (
        http_backend(status(503)) as a,
        http_backend(ok("b")) as b,
        client_for(a.port, b.port, clock=clock) as client,
    ):
        for _ in range(12):
            assert client.get("svc", "/").status_code == 200
        snap = client.stats().target("svc")
    assert snap.ejections == 1 and snap.instance("i1").ejected is True


def test_all_instances_failing_stay_within_the_retry_budget():
    clock = FakeClock()
    calls = 200
    with (
        http_backend(status(503)) as a,
        http_backend(status(503)) as b,
        http_backend(status(503)) as c,
        client_for(a.port, b.port, c.port, clock=clock, policy="least_request") as client,
    ):
        start = clock()
        codes = Counter(client.get("svc", "/").status_code for _ in range(calls))
        snap = client.stats().target("svc")
    attempts = a.hits + b.hits + c.hits
    floor = 10 + 10 * (clock() - start)  # the burst plus 10/s of (fake) elapsed time
    assert codes == {503: calls}
    assert attempts <= calls * 1.2 + floor, (attempts, floor)
    assert snap.retries_denied > 0
    assert attempts == calls + snap.retries


def test_all_instances_refusing_raise_all_attempts_failed_within_budget():
    clock = FakeClock()
    ports = [closed_port() for _ in range(3)]
    calls = 60
    with client_for(*ports, clock=clock) as client:
        start = clock()
        for _ in range(calls):
            with pytest.raises(AllAttemptsFailedError) as info:
                client.get("svc", "/")
        snap = client.stats().target("svc")
    err = info.value
    assert err.service == "svc" and 1 <= len(err.attempts) <= 3
    assert err.__cause__ is err.attempts[-1][1]
    assert isinstance(err.__cause__, requests.ConnectionError)
    attempts = sum(i.picks for i in snap.instances)
    assert attempts <= calls * 1.2 + 10 + 10 * (clock() - start)
    assert snap.failed_calls == calls


def test_read_timeout_is_retried_for_get_but_not_for_post():
    def slow(_req):
        time.sleep(0.5)
        return Response("slow")

    timeout = (1.0, 0.15)
    with (
        http_backend(slow) as a,
        http_backend(ok("b")) as b,
        client_for(a.port, b.port, clock=time.monotonic, timeout=timeout) as client,
    ):
        gets = [client.get("svc", "/").text for _ in range(2)]
        errors = 0
        for _ in range(2):
            try:
                client.post("svc", "/", data=b"x")
            except AllAttemptsFailedError as exc:
                errors += 1
                assert len(exc.attempts) == 1
                assert isinstance(exc.__cause__, requests.ReadTimeout)
    assert gets == ["b", "b"]
    assert errors == 1


def test_overall_deadline_bounds_the_call():
    def slow(_req):
        time.sleep(1.0)
        return Response("slow")

    policy = RetryPolicy(deadline=0.3)
    with (
        http_backend(slow) as a,
        http_backend(slow) as b,
        client_for(a.port, b.port, clock=time.monotonic, retry=policy) as client,
    ):
        began = time.monotonic()
        with pytest.raises(AllAttemptsFailedError):
            client.get("svc", "/", timeout=(1.0, 5.0))
        assert time.monotonic() - began < 0.9


def test_no_instance_raises_no_healthy_instance():
    source = StaticSource(resolution())
    with ServiceClient(source=source) as client:
        with pytest.raises(NoHealthyInstanceError, match="no passing instance"):
            client.get("svc", "/")
        assert client.stats().target("svc").no_instance == 1


def test_source_errors_propagate_and_the_service_stays_resolving():
    class Unknown(StaticSource):
        def resolve(self, service, timeout=5.0):
            self.resolves += 1
            raise UnknownServiceError(service, ["svc"])

    source = Unknown()
    with ServiceClient(source=source) as client:
        for _ in range(2):
            with pytest.raises(UnknownServiceError, match="Consul knows: svc"):
                client.get("nope", "/")
        nope = client.stats().target("nope")
        assert nope.index is None and nope.requests == 0  # no call was made
        assert source.resolves == 3  # each call asked the source; stats() too (timeout 0)


def test_membership_updates_reach_the_client_and_keep_load_state():
    with http_backend(ok("a")) as a, http_backend(ok("b")) as b:
        source = StaticSource(resolution(instance(1, port=a.port), fetched_at=1.0))
        with ServiceClient(source=source, default_config=ServiceConfig("round_robin")) as client:
            assert client.get("svc", "/").text == "a"
            load = client.balancer("svc").load_of("i1")
            source.push(
                resolution(
                    instance(1, port=a.port), instance(2, port=b.port), index=2, fetched_at=2.0
                )
            )
            assert {client.get("svc", "/").text for _ in range(4)} == {"a", "b"}
            assert client.balancer("svc").load_of("i1") is load and load.picks == 3
            source.push(resolution(instance(2, port=b.port), index=3, fetched_at=3.0))
            assert {client.get("svc", "/").text for _ in range(4)} == {"b"}
    assert source.resolves >= 1 and source.closed is False  # a passed-in source is not ours


def test_per_service_config_is_used():
    with http_backend(ok("a")) as a, http_backend(ok("b")) as b:
        res = resolution(
            instance(1, port=a.port, weight_passing=1), instance(2, port=b.port, weight_passing=0)
        )
        services = {"svc": ServiceConfig(policy="weighted")}
        with ServiceClient(source=StaticSource(res), services=services) as client:
            assert {client.get("svc", "/").text for _ in range(10)} == {"a"}
            assert client.config_for("svc").policy == "weighted"
            assert client.config_for("other").policy == "least_request"


def test_stats_and_prometheus_metrics():
    with http_backend(ok("a")) as a, client_for(a.port) as client:
        for _ in range(3):
            client.get("svc", "/")
        snap = client.stats().target("svc")
        text = generate_latest(client.metrics_registry).decode()
        ServiceClient(source=StaticSource()).close()  # another client: no registry clash
    assert snap.requests == 3 and snap.instance("i1").picks == 3
    assert snap.instance("i1").in_flight == 0
    assert snap.cache_age == 0.0 and snap.stale is False
    assert 'discovery_client_attempts_total{instance_id="i1",upstream="svc"} 3.0' in text
    assert 'discovery_client_calls_total{upstream="svc"} 3.0' in text
    assert 'discovery_client_cache_age_seconds{upstream="svc"} 0.0' in text
    assert 'discovery_client_instances{upstream="svc"} 1.0' in text


def test_default_source_is_a_consul_source_made_and_closed_by_the_client():
    client = ServiceClient(f"127.0.0.1:{closed_port()}")
    try:
        assert isinstance(client.source, ConsulSource)
        assert client.config_for("x") == ServiceConfig()
    finally:
        client.close()
    client.close()  # idempotent


def test_given_session_is_used_and_left_open():
    session = requests.Session()
    with http_backend(ok("a")) as a:
        with client_for(a.port, session=session) as client:
            assert client.session is session
            assert client.get("svc", "/").text == "a"
        assert session.get(f"http://127.0.0.1:{a.port}/").text == "a"
    session.close()


def test_concurrent_calls_keep_counts_consistent():
    calls_per_thread, threads = 40, 8
    with (
        http_backend(ok("a")) as a,
        http_backend(ok("b")) as b,
        client_for(a.port, b.port, policy="least_request", clock=time.monotonic) as client,
    ):

        def work() -> None:
            for _ in range(calls_per_thread):
                assert client.get("svc", "/").status_code == 200

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=30)
        snap = client.stats().target("svc")
    total = calls_per_thread * threads
    assert snap.requests == total
    assert sum(i.picks for i in snap.instances) == total
    assert all(i.in_flight == 0 for i in snap.instances)
    assert a.hits + b.hits == total and min(a.hits, b.hits) > total // 4


def test_a_raising_response_hook_does_not_leak_in_flight():
    def boom(response, **_kwargs):
        raise RuntimeError("hook failed")

    with http_backend(ok("a")) as a, client_for(a.port) as client:
        with pytest.raises(RuntimeError, match="hook failed"):
            client.get("svc", "/", hooks={"response": boom})
        assert client.stats().target("svc").instance("i1").in_flight == 0


def test_failing_instance_is_ejected_after_five_5xx_in_a_row():
    clock = FakeClock()
    with (
        http_backend(status(500)) as a,
        http_backend(ok("b")) as b,
        client_for(a.port, b.port, clock=clock) as client,
    ):
        for _ in range(10):
            client.get("svc", "/")  # round robin: a answers (500, not retried) every other call
        assert a.hits == 5
        assert {client.get("svc", "/").text for _ in range(20)} == {"b"}
        snap = client.stats().target("svc")
        assert snap.ejections == 1 and snap.instance("i1").ejected is True
        clock.advance(30.1)  # the first ejection lasts the base time
        assert "status 500" in {client.get("svc", "/").text for _ in range(4)}


def test_stale_resolution_keeps_serving_and_reports_its_age():
    clock = FakeClock(500.0)
    with http_backend(ok("a")) as a:
        source = StaticSource(resolution(instance(1, port=a.port), fetched_at=500.0))
        with ServiceClient(source=source, clock=clock) as client:
            assert client.get("svc", "/").text == "a"
            clock.advance(42)
            source.push(
                resolution(
                    instance(1, port=a.port),
                    index=1,
                    fetched_at=500.0,
                    stale=True,
                    error="Consul unreachable",
                )
            )
            assert client.get("svc", "/").text == "a"
            snap = client.stats().target("svc")
    assert snap.stale is True and snap.error == "Consul unreachable"
    assert snap.cache_age == pytest.approx(42.0)


def test_cache_age_follows_the_sources_refreshes_not_only_pushed_changes():
    clock = FakeClock(100.0)
    with http_backend(ok("a")) as a:
        inst = instance(1, port=a.port)
        source = StaticSource(resolution(inst, fetched_at=100.0))
        with ServiceClient(source=source, clock=clock) as client:
            assert client.get("svc", "/").text == "a"
            clock.advance(60)
            # An unchanged poll: the source refreshes its cache but tells no listener.
            source.current["svc"] = resolution(inst, index=2, fetched_at=158.0)
            snap = client.stats().target("svc")
    assert snap.cache_age == pytest.approx(2.0)
    assert snap.stale is False
