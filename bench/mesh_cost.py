"""Mesh cost: mTLS vs plain HTTP per request, the handshake, a cached decision, a flip.

One Connect agent (default intention policy deny; ``bclient -> bmesh`` allowed). One
in-process server, one handler on two listeners: plain HTTP, and mTLS on the service's
rotating context (``ServerTLS.front_context``) whose handler reads the caller's SPIFFE
ID from its verified certificate and asks the ``Guard`` (cached decision), as the WSGI
and ASGI guards do. The caller is one ``ServiceClient`` with two services over the same
core: ``bplain`` (plain) and ``bmesh`` (``ServiceConfig(connect=True)``: Connect-native,
dialled over mTLS as ``bclient``), the two taking turns call by call (ABBA: this
machine's speed drifts within seconds, so both paths must see the same moments of it),
keep-alive connections (one per instance), each call timed alone. So the ratio is what
the mesh adds to a whole call through the client core: TLS records both ways, the guard.

Also: the cost of a new TLS handshake (TCP connect + mTLS handshake, vs TCP connect
alone), ``Authorizer.cached`` (a cached decision, target <= 5 us), and the time from an
intention written (deny, then allow again) to the server's decision following it.
Client and server share one process (and its GIL) in every row: both paths alike.

The servers answer in one write (status, headers and body: one TLS record), as the
mesh's gunicorn and uvicorn servers do (consul_discovery.mesh.one_record gathers the
two writes each would make; tests/mesh/test_servers.py checks that an answer arrives as
one record) and as Go's net/http does for a small answer. The same calls are then
measured with both servers writing the head and the body apart (gunicorn's and
uvicorn's own way, two records per answer over TLS), an informational pair of rows: it
shows what the second record costs.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from bench.result import Chart, Result, at_most, summary
from consul_discovery.client import ServiceClient, ServiceConfig
from consul_discovery.connection import ConsulConnection
from consul_discovery.mesh import Authorizer, Guard, RequestView, ServerTLS, ServiceIdentity
from consul_discovery.mesh.spiffe import peer_spiffe_id
from tests.harness.connect import connect_agent, write_intentions


@dataclass(frozen=True, slots=True)
class Params:
    """How many timed requests, handshakes, decisions and intention flips."""

    requests: int = 4000  # per path (plain, mTLS), taking turns call by call
    handshakes: int = 300
    decisions: int = 50_000
    flips: int = 10  # deny + allow each


FULL = Params()
QUICK = Params(requests=200, handshakes=20, decisions=2000, flips=2)

BODY = b'{"ok": true}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall
    guard: Guard | None = None  # set on the mTLS listener's handler class
    one_write = False  # status, headers and body in one write (one TLS record)

    def do_GET(self) -> None:
        guard = type(self).guard
        if guard is not None:
            peer = self.__dict__.get("peer")  # read once per connection, as the guards do
            if peer is None:
                peer = self.peer = peer_spiffe_id(self.connection.getpeercert())  # type: ignore[attr-defined]
            decision = guard.check(peer, RequestView("GET", self.path))
            if not decision.allowed:
                body = guard.forbidden(decision)
                self.send_response(403)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        if _Handler.one_write:  # end_headers, with the body in the same write
            self._headers_buffer.append(b"\r\n" + BODY)  # type: ignore[attr-defined]
            self.flush_headers()
        else:
            self.end_headers()
            self.wfile.write(BODY)

    def log_message(self, *_args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def _register(agent: Any, name: str, port: int, *, native: bool) -> None:
    body: dict[str, Any] = {"ID": f"{name}-1", "Name": name, "Address": "127.0.0.1", "Port": port}
    if native:
        body["Connect"] = {"Native": True}
    requests.put(f"{agent.url}/v1/agent/service/register", json=body, timeout=5).raise_for_status()


def _timed(call: Any, n: int) -> list[float]:
    clock = time.perf_counter
    samples = []
    for _ in range(n):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return samples


def _taking_turns(a: Any, b: Any, n: int) -> tuple[list[float], list[float]]:
    """``n`` timed calls of each, in ABBA order (each pair's first call alternates)."""
    clock = time.perf_counter
    times: tuple[list[float], list[float]] = ([], [])
    for k in range(2 * n):
        side = (k + k // 2) % 2  # 0, 1, 1, 0, 0, 1, 1, 0, ...
        t0 = clock()
        (a, b)[side]()
        times[side].append(clock() - t0)
    return times


def _handshakes(port: int, context: Any, n: int) -> tuple[list[float], list[float]]:
    tcp, tls = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            tcp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            tls.append(time.perf_counter() - t0)
    return tcp, tls


def _flips(agent: Any, authz: Authorizer, source: Any, n: int) -> list[float]:
    """Seconds from writing an intention to the authorizer deciding by it."""
    samples = []
    view = RequestView("GET", "/")
    for k in range(2 * n):
        action = "deny" if k % 2 == 0 else "allow"
        t0 = time.perf_counter()
        write_intentions(agent.url, "bmesh", [{"Name": "bclient", "Action": action}])
        deadline = t0 + 10
        while authz.decide(source, view).allowed != (action == "allow"):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"intention {action} not enforced within 10 s")
            time.sleep(0.001)
        samples.append(time.perf_counter() - t0)
    return samples


def run(p: Params) -> Result:
    """Measure every row (see the module docstring)."""
    with connect_agent(default_intention_policy="deny") as agent:
        write_intentions(agent.url, "bmesh", [{"Name": "bclient", "Action": "allow"}])
        conn = ConsulConnection.from_env({}, address=agent.address)
        server_id = ServiceIdentity("bmesh", conn).start().wait_ready(30)
        client_id = ServiceIdentity("bclient", conn).start().wait_ready(30)
        authz = Authorizer("bmesh", conn).start().wait_ready(30)
        guarded = type("Guarded", (_Handler,), {"guard": Guard(authz)})
        plain = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        mesh = ThreadingHTTPServer(("127.0.0.1", 0), guarded)
        tls = ServerTLS()
        tls.update(server_id.leaf, server_id.roots)  # type: ignore[arg-type]
        mesh.socket = tls.front_context().wrap_socket(mesh.socket, server_side=True)
        threads = [_serve(plain), _serve(mesh)]
        _register(agent, "bplain", plain.server_address[1], native=False)
        _register(agent, "bmesh", mesh.server_address[1], native=True)
        services = {"bmesh": ServiceConfig(connect=True), "bplain": ServiceConfig()}
        client = ServiceClient(agent.address, services=services, identity=client_id)
        try:
            for name in ("bplain", "bmesh"):  # resolve, connect, warm up
                for _ in range(50):
                    client.get(name, "/").raise_for_status()
            plain2_s, mesh2_s = _taking_turns(  # head and body apart: two records
                lambda: client.get("bplain", "/").content,
                lambda: client.get("bmesh", "/").content,
                p.requests,
            )
            _Handler.one_write = True  # as the mesh's servers answer: one record
            try:
                plain_s, mesh_s = _taking_turns(
                    lambda: client.get("bplain", "/").content,
                    lambda: client.get("bmesh", "/").content,
                    p.requests,
                )
            finally:
                _Handler.one_write = False
            context = client_id.client_tls.context_for("bmesh")
            tcp, handshake = _handshakes(mesh.server_address[1], context, p.handshakes)
            source = client_id.spiffe_id
            view = RequestView("GET", "/")
            assert authz.decide(source, view).allowed
            cached = authz.cached
            decisions = _timed(lambda: cached(source, view), p.decisions)
            flips = _flips(agent, authz, source, p.flips)
        finally:
            client.close()
            for server in (plain, mesh):
                server.shutdown()
                server.server_close()
            for thread in threads:
                thread.join(5)
            authz.close()
            client_id.close()
            server_id.close()
    plain_sum, mesh_sum = summary(plain_s, 1e3), summary(mesh_s, 1e3)
    ratio50 = mesh_sum["p50"] / plain_sum["p50"]
    ratio99 = mesh_sum["p99"] / plain_sum["p99"]
    plain2_sum, mesh2_sum = summary(plain2_s, 1e3), summary(mesh2_s, 1e3)
    ratio50_two = mesh2_sum["p50"] / plain2_sum["p50"]
    hs, tc = summary(handshake, 1e3), summary(tcp, 1e3)
    dec, flip = summary(decisions, 1e6), summary(flips, 1e3)
    rows = [
        {"row": "call, plain HTTP (kept alive)", "unit": "ms", **plain_sum},
        {"row": "call, mTLS + guard (kept alive)", "unit": "ms", **mesh_sum},
        {"row": "call, plain HTTP, head and body apart", "unit": "ms", **plain2_sum},
        {"row": "call, mTLS + guard, head and body apart", "unit": "ms", **mesh2_sum},
        {"row": "TCP connect", "unit": "ms", **tc},
        {"row": "TCP connect + mTLS handshake", "unit": "ms", **hs},
        {"row": "cached decision (Authorizer.cached)", "unit": "us", **dec},
        {"row": "intention written -> enforced", "unit": "ms", **flip},
    ]
    checks = [
        at_most("mTLS/plain p50 per call", round(ratio50, 3), 1.1, "x"),
        at_most(
            "mTLS/plain p99 per call",
            round(ratio99, 3),
            1.1,
            "x",
            note="informational: p99 of a shared 2-core machine",
        ),
        at_most(
            "mTLS/plain p50, head and body written apart",
            round(ratio50_two, 3),
            1.1,
            "x",
            note="informational: a server writing an answer in two TLS records",
        ),
        at_most("cached decision p50", round(dec["p50"], 2), 5.0, " us"),
        at_most("intention -> enforced p99", round(flip["p99"], 1), 1000.0, " ms"),
    ]
    notes = [
        f"handshake cost (p50): {hs['p50'] - tc['p50']:.2f} ms over a TCP connect",
        "client and server in one process (one GIL): both paths alike",
    ]
    chart = Chart(
        "Per call through the client core, kept-alive connections",
        "ms",
        ("p50", "p99"),
        {
            "plain HTTP": [plain_sum["p50"], plain_sum["p99"]],
            "mTLS + guard": [mesh_sum["p50"], mesh_sum["p99"]],
        },
    )
    return Result("mesh_cost", "Mesh: mTLS vs plain, handshake, decision, flip", rows,
                  checks, charts=[chart], params={}, notes=notes)  # fmt: skip
