"""ServiceClient's own behaviour against tiny real HTTP servers in threads, with a static
instance source: what requests callers pass through, readiness and source errors,
membership updates, per-service config, its stats and registry, the session it is given
or makes, concurrency, a raising hook, freshness.

The rules every transport shares (retries, Retry-After, budget, ejection, relayed
failures, no instance) are tested through all three shells in test_shells.py (canned
transports, injected clock) and against a real agent in conformance/.
"""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest
import requests
from prometheus_client import generate_latest
from werkzeug.wrappers import Response

from consul_discovery.client import (
    AllAttemptsFailedError,
    ConsulSource,
    RetryPolicy,
    ServiceClient,
    ServiceConfig,
    UnknownServiceError,
)
from consul_discovery.client.target import service_of
from tests.discovery_client.fakes import (
    FakeClock,
    StaticSource,
    http_backend,
    instance,
    ok,
    resolution,
)
from tests.harness.socket_server import closed_port, socket_server


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


def cut_body(conn: socket.socket) -> None:
    """Answer with a head promising 42 bytes of body, then hang up: an instance killed
    between the two writes of its answer."""
    conn.settimeout(5)
    with conn:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")


def test_a_body_cut_after_its_head_is_retried_on_another_instance():
    with (
        socket_server(cut_body) as cut,
        http_backend(ok("good")) as good,
        client_for(cut, good.port) as client,  # round robin: each instance in turn
    ):
        answers = [client.get("svc", "/") for _ in range(4)]
        stats = client.stats().targets[0]
    assert [a.text for a in answers] == ["good"] * 4
    assert stats.retries >= 2  # every call that went to the cut instance first


def test_a_streamed_body_cut_after_its_head_is_the_callers_to_read():
    with socket_server(cut_body) as cut, client_for(cut) as client:
        answer = client.get("svc", "/", stream=True)
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            _ = answer.content


def test_query_headers_and_json_pass_through():
    def echo(req):
        return Response(f"{req.args['q']}|{req.headers['X-Trace']}|{req.get_data(as_text=True)}")

    with http_backend(echo) as a, client_for(a.port) as client:
        r = client.post("svc", "/x", params={"q": "1"}, headers={"X-Trace": "t"}, json={"k": 2})
    assert r.text == '1|t|{"k": 2}'


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


def test_source_errors_propagate_and_the_service_stays_resolving():
    class Unknown(StaticSource):
        def resolve(self, service, timeout=5.0):
            self.resolves += 1
            raise UnknownServiceError(service_of(service), ["svc"])

    source = Unknown()
    with ServiceClient(source=source) as client:
        for _ in range(2):
            with pytest.raises(UnknownServiceError, match="Consul knows: svc"):
                client.get("nope", "/")
        nope = client.stats().target("nope")
        assert nope.index is None and nope.requests == 0  # no call was made
        assert source.resolves == 2  # each call asked the source; stats() never does


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


class _ProxiesSeen(requests.adapters.BaseAdapter):
    """An adapter recording the ``proxies`` each attempt is sent with; answers 200."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, str]] = []

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        self.seen.append(kwargs["proxies"])
        response = requests.Response()
        response.status_code, response._content = 200, b"ok"
        response.request, response.url = request, request.url
        return response

    def close(self) -> None:
        pass


@pytest.mark.parametrize("trust_env", [False, True])
def test_each_attempt_gets_the_proxies_session_send_would_give_it(trust_env, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = requests.Session()
    session.trust_env = trust_env
    session.proxies = {"https": "http://tls-proxy.invalid:3128"}
    adapter = _ProxiesSeen()
    session.mount("http://", adapter)
    with client_for(8080, session=session) as client:
        client.get("svc", "/")
        client.get("svc", "/", proxies={"http": "http://mine.invalid:1"})
    expected = requests.utils.resolve_proxies(
        requests.Request("GET", "http://127.0.0.1:8080/").prepare(), session.proxies, trust_env
    )
    assert adapter.seen == [expected, {"http": "http://mine.invalid:1"}]
    assert ("http" in expected) is trust_env  # the environment's proxy only when trusted
    assert adapter.seen[0] is not session.proxies  # a copy, as Session.send passes


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
