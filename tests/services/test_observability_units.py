"""Trace context parsing and propagation, RED metrics, the discovery client's published
series, and the Prometheus config: pure logic, no Consul."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client import CollectorRegistry, generate_latest

from consul_discovery.client import propagation
from consul_discovery.client.instance import Instance
from consul_discovery.client.metrics import ClientMetricsPublisher
from consul_discovery.client.stats import ClientStats, InstanceStats, TargetStats, WatchStats
from consul_discovery.client.target import Target
from services.cluster import prometheus
from services.cluster.targets import target_groups
from services.common.metrics import RequestMetrics, route_label
from services.common.tracing import init_tracing, new_trace, parse_traceparent
from services.gateway import create_app as create_gateway_app
from services.user_service import create_app as create_user_app

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_parses() -> None:
    ctx = parse_traceparent(VALID)
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id, ctx.flags) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        1,
    )
    assert ctx.traceparent == VALID
    child = ctx.child()
    assert child.trace_id == ctx.trace_id and child.span_id != ctx.span_id
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        "garbage",
        VALID.upper(),  # uppercase hex
        VALID + "-extra",  # version 00 has exactly four fields
        "ff" + VALID[2:],  # version ff is invalid
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  # misplaced dash
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",  # not hex
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # no dash after 55
        "x" * 10_000,
    ],
)
def test_bad_traceparents_are_ignored_not_errors(bad: str | None) -> None:
    assert parse_traceparent(bad) is None


def _echo_app() -> Flask:
    app = Flask(__name__)
    init_tracing(app)

    @app.get("/echo")
    def echo() -> dict[str, Any]:
        return dict(propagation.current_headers())

    return app


def test_a_request_continues_the_callers_trace_and_passes_it_on() -> None:
    client = _echo_app().test_client()
    out = client.get("/echo", headers={"traceparent": VALID, "X-Request-Id": "r1"}).json
    passed_on = parse_traceparent(out["traceparent"])
    assert passed_on is not None
    assert passed_on.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert passed_on.span_id != "00f067aa0ba902b7"  # this service's own span
    assert out["X-Request-Id"] == "r1"
    fresh = client.get("/echo", headers={"traceparent": "junk"}).json
    started = parse_traceparent(fresh["traceparent"])
    assert started is not None and started.trace_id != passed_on.trace_id
    assert propagation.current_headers() == {}  # nothing leaks out of the request


def test_the_discovery_client_adds_propagated_headers_it_was_not_given() -> None:
    headers: dict[str, str] = {"X-Request-Id": "explicit"}
    with propagation.propagating({"traceparent": new_trace().traceparent, "X-Request-Id": "r"}):
        propagation.inject(headers)
    assert headers["X-Request-Id"] == "explicit"
    assert parse_traceparent(headers["traceparent"]) is not None


def test_red_series_use_route_templates_and_bounded_labels() -> None:
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry)
    metrics.observe("/users/<int:user_id>", "GET", 200, 0.012)
    metrics.observe(None, "BREW", 404, 0.001)
    get = registry.get_sample_value
    labels = {"route": "/users/<int:user_id>", "method": "GET", "status": "200"}
    assert get("http_server_requests_total", labels) == 1
    assert get("http_server_request_duration_seconds_bucket", {**labels, "le": "0.025"}) == 1
    assert get("http_server_request_duration_seconds_bucket", {**labels, "le": "0.01"}) == 0
    other = {"route": "unmatched", "method": "OTHER", "status": "404"}
    assert get("http_server_requests_total", other) == 1


def test_every_service_serves_metrics_with_its_routes(tmp_path: Path) -> None:
    app = create_user_app(
        {"REGISTRY_ENABLED": False, "USER_DB_PATH": str(tmp_path / "u.db"), "SECRET_KEY": "x"}
    )
    client = app.test_client()
    client.get("/users/12345")
    body = client.get("/metrics")
    assert body.status_code == 200 and body.content_type.startswith("text/plain")
    assert 'route="/users/<int:user_id>"' in body.text  # converter arguments dropped
    assert "/users/12345" not in body.text


def test_route_labels_drop_converter_arguments() -> None:
    assert (
        route_label("/orders/<int(max=9223372036854775807):order_id>") == "/orders/<int:order_id>"
    )
    assert route_label("/a/<string(length=3):x>/<path:rest>") == "/a/<string:x>/<path:rest>"


def test_the_gateway_labels_each_public_route() -> None:
    """Each public route gets its own series (OPTIONS too); what no route serves is one."""
    app = create_gateway_app({"REGISTRY_ENABLED": False, "DISCOVERY_CLIENT": _Answering()})
    client = app.test_client()
    assert client.get("/api/orders/7").status_code == 200
    assert client.get("/api/orders").status_code == 200
    assert client.options("/api/stock/pen").status_code == 200
    assert client.get("/api/nothing/here").status_code == 404
    text = client.get("/metrics").text
    for route in ("/api/orders/<rest>", "/api/orders", "/api/stock/<rest>", "unmatched"):
        assert f'route="{route}"' in text, route
    assert "/api/orders/7" not in text and "/api/nothing" not in text


class _Answering:
    """A discovery client whose every call answers 200 ``{}``."""

    def request(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response._content = b"{}"
        response.headers["Content-Type"] = "application/json"
        return response


class _FakeClient:
    """A client whose typed stats a test moves by hand."""

    def __init__(self) -> None:
        self.picks = 3

    def stats(self) -> ClientStats:
        inst = InstanceStats(
            id="u1", address="127.0.0.1:1", health="passing", weight=1, picks=self.picks,
            in_flight=1, failures=0, consecutive_failures=0, retries=0, ejections=0,
            ejected=False, ejected_for=0.0, latency_ewma=0.01,
        )  # fmt: skip
        target = TargetStats(
            target=Target("user-service"), policy="least_request", index=9, cache_age=0.5,
            stale=False, error=None, panic=False, held=(), ejections=0, requests=self.picks,
            retries=1, retries_denied=0, retry_budget=10.0, failed_calls=0, no_instance=0,
            watch=WatchStats(requests=5, errors=2, index=9, rate_limited=1), instances=(inst,),
        )  # fmt: skip
        return ClientStats((target,))


def test_the_publisher_adds_deltas_and_survives_a_counter_restart() -> None:
    registry = CollectorRegistry()
    fake = _FakeClient()
    publisher = ClientMetricsPublisher(fake, registry=registry)  # type: ignore[arg-type]
    get = registry.get_sample_value
    attempts = {"upstream": "user-service", "instance_id": "u1"}
    publisher.publish()
    publisher.publish()  # nothing new: nothing added
    assert get("discovery_client_attempts_total", attempts) == 3
    assert get("discovery_client_watch_errors_total", {"upstream": "user-service"}) == 2
    assert get("discovery_client_consul_rate_limited_total", {"upstream": "user-service"}) == 1
    assert get("discovery_client_cache_age_seconds", {"upstream": "user-service"}) == 0.5
    fake.picks = 5
    publisher.publish()
    assert get("discovery_client_attempts_total", attempts) == 5
    fake.picks = 2  # the instance left and came back: its count started again
    publisher.publish()
    assert get("discovery_client_attempts_total", attempts) == 7
    assert b"discovery_client_retries_total" in generate_latest(registry)


def test_prometheus_config_consul_sd_with_token_file_and_ca(tmp_path: Path) -> None:
    access = prometheus.ConsulAccess(
        "127.0.0.1:8501", scheme="https", token_file=tmp_path / "t", ca_file=tmp_path / "ca"
    )
    path = prometheus.write_config(tmp_path, access, "1s")
    job = json.loads(path.read_text())["scrape_configs"][0]
    sd = job["consul_sd_configs"][0]
    assert sd["scheme"] == "https"
    assert sd["authorization"] == {"credentials_file": str(tmp_path / "t")}
    assert sd["tls_config"] == {"ca_file": str(tmp_path / "ca")}
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep"
    assert keep["source_labels"] == ["__meta_consul_service_metadata_metrics_path"]
    with pytest.raises(ValueError, match="scheme"):
        prometheus.ConsulAccess("x:1", scheme="ftp")


def test_file_sd_targets_carry_consul_sd_labels() -> None:
    inst = Instance(
        "user-service-1", "user-service", "127.0.0.1", 8101, ("a", "b"), {"metrics_path": "/m"}
    )
    (group,) = target_groups([inst])
    assert group["targets"] == ["127.0.0.1:8101"]
    labels = group["labels"]
    assert labels["__meta_consul_service"] == "user-service"
    assert labels["__meta_consul_service_id"] == "user-service-1"
    assert labels["__meta_consul_tags"] == ",a,b,"
    assert labels["__meta_consul_service_metadata_metrics_path"] == "/m"
