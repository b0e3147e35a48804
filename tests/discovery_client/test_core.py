"""DiscoveryCore: per-Target state without I/O, readiness, routes, the typed stats snapshot,
optional metrics; and the package's import rules (no cycle, no prometheus_client needed)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.core import DiscoveryCore
from consul_discovery.client.instance import Resolution
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.route import RequestView
from consul_discovery.client.stats import ClientStats, WatchStats
from consul_discovery.client.target import Target, service_of
from consul_discovery.extras import ExtraMissingError
from tests.discovery_client.fakes import FakeClock, instance, resolution

PACKAGE = Path(__file__).resolve().parents[2] / "discovery_client"


class RecordingSource:
    """A source that records what the core asks of it; ``resolve`` must never be called."""

    def __init__(self) -> None:
        self.subscribed: list[tuple[Any, Any]] = []
        self.cache: dict[str, Resolution] = {}
        self.watches: dict[str, WatchStats] = {}

    def subscribe(self, key: Any, listener: Any) -> None:
        self.subscribed.append((service_of(key), listener))

    def cached(self, key: Any) -> Resolution | None:
        return self.cache.get(service_of(key))

    def watch_stats(self, key: Any) -> WatchStats | None:
        return self.watches.get(service_of(key))

    def resolve(self, key: Any, timeout: float = 5.0) -> Resolution:
        raise AssertionError("the core never resolves: that is the shell's I/O")


def test_a_target_s_state_is_made_at_once_without_io_and_starts_resolving():
    source = RecordingSource()
    core = DiscoveryCore(source, services={"svc": ServiceConfig(tag="v2")}, clock=FakeClock())
    state = core.state("svc")
    assert state.target == Target("svc", tag="v2") == core.target_for("svc")
    assert not state.ready
    assert [key for key, _ in source.subscribed] == ["svc"]  # subscribed, nothing fetched
    stats = core.stats().target("svc")
    assert stats.index is None and stats.cache_age is None and stats.instances == ()
    source.subscribed[0][1](resolution(instance(1)))  # the watch delivers
    assert state.ready and core.state("svc") is state


def test_one_route_per_service_made_once():
    core = DiscoveryCore(RecordingSource(), clock=FakeClock())
    route = core.route("a")
    assert core.route("a") is route and route.primary is core.state("a")
    assert route.service == "a" and route.retry is core.retry and route.hash_policy is None
    assert core.route("b") is not route


def test_first_wait_is_bounded_by_resolve_timeout_and_what_is_left_of_the_deadline():
    clock = FakeClock()
    core = DiscoveryCore(RecordingSource(), resolve_timeout=2.0, clock=clock,
                         retry=RetryPolicy(deadline=5.0))  # fmt: skip
    assert core.first_wait(clock()) == 2.0
    assert core.first_wait(clock(), RetryPolicy(deadline=1.0)) == 1.0
    assert core.first_wait(clock() - 0.3, RetryPolicy(deadline=1.0)) == pytest.approx(0.7)
    assert core.first_wait(clock() - 9.0) == 0.0
    with pytest.raises(ValueError, match="resolve_timeout"):
        DiscoveryCore(RecordingSource(), resolve_timeout=-1)


def test_stats_are_typed_frozen_fresh_from_the_source_and_json_able():
    clock = FakeClock(100.0)
    source = RecordingSource()
    core = DiscoveryCore(source, clock=clock)
    state = core.state("svc")
    state.adopt(resolution(instance(1), instance(2), index=7, fetched_at=90.0))
    # An unchanged poll moved the source's fetched_at without telling the balancer.
    source.cache["svc"] = resolution(instance(1), instance(2), index=7, fetched_at=99.0)
    source.watches["svc"] = WatchStats(requests=4, errors=1, index=7)
    stats = core.stats()
    assert isinstance(stats, ClientStats)
    svc = stats.target("svc")
    assert svc.cache_age == pytest.approx(1.0) and svc.index == 7 and svc.stale is False
    assert svc.watch == WatchStats(4, 1, 7)
    assert [i.id for i in svc.instances] == ["i1", "i2"] and svc.instance("i2").picks == 0
    with pytest.raises(AttributeError):
        svc.requests = 5  # type: ignore[misc]
    with pytest.raises(KeyError, match="svc"):
        stats.target("other")
    data = json.loads(json.dumps(stats.as_dict()))
    (only,) = data["targets"]
    assert only["target"]["service"] == "svc" and only["upstream"] == "svc"
    assert only["watch"] == {"requests": 4, "errors": 1, "index": 7}
    assert [i["id"] for i in only["instances"]] == ["i1", "i2"]


def test_the_metrics_registry_is_made_on_first_use_or_taken_as_given():
    from prometheus_client import CollectorRegistry, generate_latest

    core = DiscoveryCore(RecordingSource(), clock=FakeClock())
    registry = core.metrics_registry
    assert core.metrics_registry is registry
    core.state("svc").adopt(resolution(instance(1)))
    assert 'discovery_client_instances{upstream="svc"} 1.0' in generate_latest(registry).decode()
    given = CollectorRegistry()
    assert DiscoveryCore(RecordingSource(), registry=given).metrics_registry is given


def test_close_refuses_new_targets():
    core = DiscoveryCore(RecordingSource(), clock=FakeClock())
    assert core.close() is True and core.close() is False and core.closed
    with pytest.raises(RuntimeError, match="closed"):
        core.state("svc")


def test_the_client_imports_and_calls_without_prometheus_client():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None  # any import of it fails
        import consul_discovery.client as client
        from tests.discovery_client.fakes import StaticSource, instance, resolution
        c = client.ServiceClient(source=StaticSource(resolution(instance(1))))
        c.balancer("svc")
        assert c.stats().target("svc").instances[0].id == "i1"
        try:
            c.metrics_registry
        except ImportError:
            print("ok")
        """
    )
    root = PACKAGE.parent
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_metrics_registry_without_prometheus_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # any import of it fails
    core = DiscoveryCore(RecordingSource(), clock=FakeClock())
    with pytest.raises(ExtraMissingError) as raised:
        core.metrics_registry  # noqa: B018
    assert raised.value.extra == "prometheus"
    assert "pip install 'consul-discovery[prometheus]'" in str(raised.value)
    assert "metrics_registry needs prometheus_client" in str(raised.value)


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "consul_discovery.client":
                found.add("__init__")
            elif name.startswith("consul_discovery.client."):
                module = name.removeprefix("consul_discovery.client.").split(".")[0]
                if (PACKAGE / f"{module}.py").exists():
                    found.add(module)
    return found


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    graph = {p.stem: _imports(p) - {p.stem} for p in PACKAGE.glob("*.py")}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(module, ())):
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and len(path) < 12:
                visit(nxt, [*path, nxt])

    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []


def test_the_request_view_parses_lazily_and_never_shows_headers():
    asked = []

    def raw_path() -> str:
        asked.append(1)
        return "/users/7?full=1"

    view = RequestView("GET", raw_path, {"Authorization": "Bearer s3cret"})
    assert asked == []  # nothing computed until routing asks
    assert (view.path, view.query, view.raw_path) == ("/users/7", "full=1", "/users/7?full=1")
    assert asked == [1]
    assert "s3cret" not in repr(view) and repr(view) == "RequestView(GET /users/7?full=1)"
    assert RequestView("GET", "/", {}).path == "/" and RequestView("GET", "?a", {}).path == "/"
