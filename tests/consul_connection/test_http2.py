"""The HTTP/2 transport's edge cases, against a scripted TLS HTTP/2 server.

What a Consul agent will not do on demand (tests/harness/h2_server.py): a low stream
limit, answers larger than every flow-control window, GOAWAY or a dropped connection
with streams in flight, a stream that never answers, go-connlimit's raw 429 after ALPN
chose h2; and the TLS settings of ``ConsulConnection`` (CA, server name, client
certificate) and the token header.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.agent_sender import AgentSender
from consul_discovery.connection.agent_transport import AgentTransport
from consul_discovery.connection.exchange import Request, TransportError, TransportFailure
from tests.harness.binary import consul_binary
from tests.harness.h2_server import RAW_429, Answer, H2TestServer
from tests.harness.tls_agent import make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_certificates(where)
    subprocess.run(
        [consul_binary(), "tls", "cert", "create", "-client", "-days=2", "-ca", str(ca),
         "-key", str(where / "consul-agent-ca-key.pem")],
        cwd=where, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    client = where / "dc1-client-consul-0.pem"
    return {"ca": ca, "cert": cert, "key": key, "client": client,
            "client_key": where / "dc1-client-consul-0-key.pem"}  # fmt: skip


@pytest.fixture
def serve(certs: dict[str, Path]) -> Iterator:
    servers: list[H2TestServer] = []

    def start(**kwargs: object) -> H2TestServer:
        server = H2TestServer(certs["cert"], certs["key"], **kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def connection(server: H2TestServer, certs: dict[str, Path], **overrides: object):
    return ConsulConnection.from_env(
        {}, address=f"https://127.0.0.1:{server.port}", ca_file=str(certs["ca"]), **overrides
    )


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_requests_beyond_the_servers_stream_limit_wait_for_a_slot(serve, certs):
    server = serve(max_streams=2, handler=lambda _h: Answer(delay=0.1))

    async def main() -> list[int]:
        transport = AgentTransport(connection(server, certs))
        try:
            answers = await asyncio.gather(
                *(transport.send(Request(f"/v1/kv/{n}"), {}) for n in range(7))
            )
            return [a.status for a in answers]
        finally:
            await transport.aclose()

    assert run(main()) == [200] * 7
    assert server.most_open == 2 and server.connections == 1


def test_answers_larger_than_every_window_arrive_whole(serve, certs):
    bodies = {f"/v1/kv/{n}": bytes([65 + n]) * (300_000 + n) for n in range(4)}
    server = serve(handler=lambda h: Answer(body=bodies[h[":path"]]))

    async def main() -> dict[str, bytes]:
        # 64 KiB windows: every answer needs WINDOW_UPDATEs, stream and connection alike
        transport = AgentTransport(connection(server, certs), windows=(65535, 65535))
        try:
            answers = await asyncio.gather(*(transport.send(Request(p), {}) for p in bodies))
            return {p: a.body for p, a in zip(bodies, answers, strict=True)}
        finally:
            await transport.aclose()

    assert run(main()) == bodies


def test_goaway_fails_every_stream_in_flight_and_the_next_request_reconnects(serve, certs):
    server = serve(handler=lambda h: Answer(hold=h[":path"] == "/hold"))

    async def main() -> tuple[list[object], int]:
        transport = AgentTransport(connection(server, certs))
        try:
            held = [asyncio.ensure_future(transport.send(Request("/hold"), {})) for _ in range(3)]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.goaway)
            failed = await asyncio.gather(*held, return_exceptions=True)
            again = await transport.send(Request("/v1/status/leader"), {})
            return failed, again.status
        finally:
            await transport.aclose()

    failed, status = run(main())
    assert all(isinstance(f, TransportError) for f in failed), failed
    assert {f.kind for f in failed} == {TransportFailure.RESET}  # type: ignore[union-attr]
    assert "GOAWAY" in str(failed[0])
    assert status == 200 and server.connections == 2


def test_a_dropped_connection_fails_its_streams_as_reset(serve, certs):
    server = serve(handler=lambda _h: Answer(hold=True))

    async def main() -> list[object]:
        transport = AgentTransport(connection(server, certs))
        try:
            held = [asyncio.ensure_future(transport.send(Request("/hold"), {})) for _ in range(2)]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.drop)
            return await asyncio.gather(*held, return_exceptions=True)
        finally:
            await transport.aclose()

    failed = run(main())
    assert [getattr(f, "kind", f) for f in failed] == [TransportFailure.RESET] * 2


def test_a_request_that_times_out_resets_its_stream_and_keeps_the_connection(serve, certs):
    server = serve(handler=lambda h: Answer(hold=h[":path"] == "/hold"))

    async def main() -> tuple[object, int]:
        transport = AgentTransport(connection(server, certs))
        try:
            try:
                await transport.send(Request("/hold", timeout=0.3), {})
            except TransportError as exc:
                timed_out: object = exc
            again = await transport.send(Request("/v1/status/leader"), {})
            await asyncio.sleep(0.1)
            return timed_out, again.status
        finally:
            await transport.aclose()

    timed_out, status = run(main())
    assert getattr(timed_out, "kind", None) is TransportFailure.TIMEOUT
    assert status == 200 and server.connections == 1
    assert server.resets == [1], "the abandoned stream is reset (RST_STREAM), not left open"


def test_close_cuts_requests_in_flight_short_as_closed(serve, certs):
    server = serve(handler=lambda _h: Answer(hold=True))

    async def main() -> object:
        transport = AgentTransport(connection(server, certs))
        held = asyncio.ensure_future(transport.send(Request("/hold"), {}))
        await asyncio.sleep(0.3)
        await transport.aclose()
        return (await asyncio.gather(held, return_exceptions=True))[0]

    assert getattr(run(main()), "kind", None) is TransportFailure.CLOSED


def test_a_cancelled_wait_for_a_slot_does_not_leak_it(serve, certs):
    server = serve(max_streams=1, handler=lambda h: Answer(delay=0.3))

    async def main() -> int:
        transport = AgentTransport(connection(server, certs))
        try:
            await transport.send(Request("/warm"), {})  # connected, the stream limit known
            first = asyncio.ensure_future(transport.send(Request("/a"), {}))
            await asyncio.sleep(0.05)
            waiting = asyncio.ensure_future(transport.send(Request("/b"), {}))
            await asyncio.sleep(0.05)
            waiting.cancel()
            await first
            third = await transport.send(Request("/c", timeout=2.0), {})
            return third.status
        finally:
            await transport.aclose()

    assert run(main()) == 200
    assert [r[":path"] for r in server.requests] == ["/warm", "/a", "/c"]


def test_go_connlimits_raw_429_after_alpn_is_an_answer(serve, certs):
    server = serve(raw_429=True)

    async def main() -> tuple[int, bytes]:
        transport = AgentTransport(connection(server, certs))
        try:
            answer = await transport.send(Request("/v1/health/service/web"), {})
            return answer.status, answer.body
        finally:
            await transport.aclose()

    status, body = run(main())
    assert status == 429 and body == RAW_429.split(b"\r\n\r\n", 1)[1]


def test_the_token_is_a_header_and_the_server_name_is_checked(serve, certs):
    server = serve()

    async def main(**overrides: object) -> int:
        sender = AgentSender(connection(server, certs, **overrides))
        try:
            return (await sender(Request("/v1/kv/x", (("index", "3"),)))).status
        finally:
            await sender.aclose()

    assert run(main(token="s3cret-token", tls_server_name="server.dc1.consul")) == 200
    seen = server.requests[-1]
    assert seen["x-consul-token"] == "s3cret-token" and "s3cret" not in seen[":path"]
    assert seen[":path"] == "/v1/kv/x?index=3"
    assert seen[":authority"] == f"127.0.0.1:{server.port}"
    with pytest.raises(TransportError) as untrusted:
        run(main(tls_server_name="someone-else.example"))
    assert untrusted.value.kind is TransportFailure.TLS_UNTRUSTED


def test_hpacks_debug_log_shows_neither_the_token_nor_its_encoded_block(serve, certs, caplog):
    # hpack logged "Adding b'x-consul-token'=b'<token>'" and the Huffman-coded block at
    # DEBUG; the token header is now never-indexed and the block not shown.
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    token = "6a1f0c2e-hpack-leak-check-000000000001"
    huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(token.encode())
    server = serve()

    async def main() -> int:
        sender = AgentSender(connection(server, certs, token=token))
        try:
            await sender(Request("/v1/kv/x"))
            return (await sender(Request("/v1/kv/y"))).status
        finally:
            await sender.aclose()

    with caplog.at_level(logging.DEBUG):
        assert run(main()) == 200
    assert server.requests[-1]["x-consul-token"] == token
    # The scripted server decodes in this process too: its "Decod..." lines are not ours.
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.msg.startswith("Decod"))
    assert "x-consul-token" in ours  # hpack's lines were captured
    assert token not in ours and repr(huffman)[2:-1] not in ours
    assert "Encoded header block to <not shown" in ours


def test_a_client_certificate_is_presented_when_configured(serve, certs):
    server = serve(client_ca=certs["ca"])

    async def main(**overrides: object) -> int:
        transport = AgentTransport(connection(server, certs, **overrides))
        try:
            return (await transport.send(Request("/v1/kv/x"), {})).status
        finally:
            await transport.aclose()

    with_cert = {"client_cert": str(certs["client"]), "client_key": str(certs["client_key"])}
    assert run(main(**with_cert)) == 200
    with pytest.raises(TransportError) as refused:
        run(main())
    assert refused.value.kind in (TransportFailure.TLS, TransportFailure.RESET)
