"""The argument types every CLI shares (``consul_discovery.connection.cli_arguments``):
each CLI refuses a number of seconds that is not > 0, a count below 1 and a port outside
0-65535 with argparse's one usage line, before anything reaches Consul. No agent."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable

import pytest

from consul_discovery.client.cli import main as discovery_main
from consul_discovery.config.cli import main as config_main
from consul_discovery.config.kv import KVStore
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.cli_arguments import (
    port_number,
    positive_count,
    positive_seconds,
)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "-inf", "soon", ""])
def test_positive_seconds_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_seconds(text)


@pytest.mark.parametrize(
    ("convert", "text", "value"),
    [(positive_seconds, "0.5", 0.5), (positive_count, "3", 3), (port_number, "0", 0),
     (port_number, "65535", 65535)],
)  # fmt: skip
def test_good_values_pass(convert: Callable[[str], object], text: str, value: object) -> None:
    assert convert(text) == value


@pytest.mark.parametrize(
    ("convert", "text"),
    [(positive_count, "0"), (positive_count, "-2"), (positive_count, "1.5"),
     (port_number, "-1"), (port_number, "65536"), (port_number, "http")],
)  # fmt: skip
def test_counts_and_ports_out_of_range_are_refused(
    convert: Callable[[str], object], text: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        convert(text)


def refused(
    capsys: pytest.CaptureFixture[str], main: Callable[..., object], argv: list[str]
) -> str:
    """What ``main`` says on stderr as argparse exits 2 on ``argv``."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("timeout", "words"),
    [("0", "'0' is not more than 0 seconds"), ("-1", "'-1' is negative"),
     ("nan", "'nan' is not a finite duration"), ("inf", "'inf' is not a finite duration")],
)  # fmt: skip
def test_config_watch_refuses_a_timeout_that_is_not_positive(
    capsys: pytest.CaptureFixture[str], timeout: str, words: str
) -> None:
    argv = ["--consul", "127.0.0.1:1", "watch", "--service", "orders", "--timeout", timeout]
    err = refused(capsys, lambda a: config_main(a, io.StringIO()), argv)
    assert f"argument --timeout: {words}" in err


@pytest.mark.parametrize("count", ["0", "-1"])
def test_config_watch_refuses_a_count_below_one(
    capsys: pytest.CaptureFixture[str], count: str
) -> None:
    argv = ["--consul", "127.0.0.1:1", "watch", "--service", "orders", "--count", count]
    err = refused(capsys, lambda a: config_main(a, io.StringIO()), argv)
    assert "argument --count: must be 1 or more" in err


@pytest.mark.parametrize("cas", ["-5", "3.5", "latest"])
def test_config_put_refuses_a_cas_that_is_no_modify_index(
    capsys: pytest.CaptureFixture[str], cas: str
) -> None:
    argv = ["--consul", "127.0.0.1:1", "put", "--raw-key", "k", "v", "--cas", cas]
    err = refused(capsys, lambda a: config_main(a, io.StringIO()), argv)
    assert "argument --cas: " in err
    assert "ModifyIndex" in err


@pytest.mark.parametrize("cas", [-1, True, 2.0, "3"])
def test_the_kv_store_refuses_a_cas_that_is_no_modify_index_before_sending(cas: object) -> None:
    store = KVStore(ConsulConnection.from_env({}, address="127.0.0.1:1"))
    for write in (lambda: store.put("k", "v", cas=cas), lambda: store.delete("k", cas=cas)):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cas is a key's ModifyIndex, a whole number >= 0"):
            write()


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [("--ready-timeout", "0", "'0' is not more than 0 seconds"),
     ("--timeout-graceful-shutdown", "-5", "'-5' is negative"),
     ("--timeout-keep-alive", "nan", "'nan' is not a finite duration"),
     ("--port", "70000", "must be a port 0-65535")],
)  # fmt: skip
def test_mesh_uvicorn_refuses_bad_numbers(
    capsys: pytest.CaptureFixture[str], option: str, value: str, words: str
) -> None:
    from consul_discovery.mesh import uvicorn as mesh_uvicorn

    err = refused(capsys, mesh_uvicorn.main, ["app:app", option, value])
    assert f"argument {option}: {words}" in err


@pytest.mark.parametrize("address", ["bad:addr:x", "127.0.0.1:0", "[::1", "ftp://127.0.0.1"])
def test_both_clis_refuse_a_bad_consul_address_as_a_usage_error(
    capsys: pytest.CaptureFixture[str], address: str
) -> None:
    """``--consul`` is named, exit 2 before Consul is asked; before, exit 1 with
    "error: address: invalid Consul address ..." (the connection's parameter name)."""
    for main, argv in (
        (lambda a: config_main(a, io.StringIO()), ["get", "--service", "orders", "k"]),
        (lambda a: discovery_main(a, io.StringIO(), io.StringIO()), ["services"]),
    ):
        err = refused(capsys, main, ["--consul", address, *argv])
        assert f"argument --consul: invalid Consul address {address!r}" in err, err
