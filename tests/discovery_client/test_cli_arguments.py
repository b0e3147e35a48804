"""The CLI's arguments, refused before anything reaches Consul: the usage line names the
console script (``python -m`` when run so), ``--timeout`` must be > 0, a service NAME to
call follows the registry's SERVICE_NAME rule. No agent: parsing fails first."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from consul_discovery.client.cli import build_parser, main
from tests.harness.binary import REPO_ROOT


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What the CLI says on stderr as it exits 2 on ``argv`` (Consul at a closed port)."""
    with pytest.raises(SystemExit) as exited:
        main(["--consul", "127.0.0.1:1", *argv], out=io.StringIO(), err=io.StringIO())
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_usage_names_the_console_script(capsys):
    assert build_parser().prog == "consul-discovery"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: consul-discovery ")


def test_usage_under_python_m_names_the_module():
    done = subprocess.run(
        [sys.executable, "-m", "consul_discovery.client", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m consul_discovery.client ")


@pytest.mark.parametrize(
    ("timeout", "words"),
    [("-1", "'-1' is negative"), ("0", "'0' is not more than 0 seconds"),
     ("nan", "'nan' is not a finite duration"), ("inf", "'inf' is not a finite duration")],
)  # fmt: skip
def test_a_timeout_that_is_not_positive_is_refused(capsys, timeout, words):
    err = refused(capsys, "--timeout", timeout, "resolve", "orders")
    assert f"argument --timeout: {words}" in err


def test_a_timeout_that_is_not_a_duration_is_refused(capsys):
    assert "'soon' is not a duration" in refused(capsys, "--timeout", "soon", "services")


@pytest.mark.parametrize("name", ["bad name!", "a/b", "x:80", ""])
def test_call_refuses_a_name_no_url_can_carry(capsys, name):
    err = refused(capsys, "call", name, "GET", "/")
    assert "argument NAME: " in err and "cannot be called by name" in err


@pytest.mark.parametrize("name", ["my_service", "ends-", "v1.orders"])
def test_call_takes_names_consul_registers_from_other_tools(name):
    assert build_parser().parse_args(["call", name, "GET", "/"]).service == name


def test_good_arguments_parse():
    args = build_parser().parse_args(["--timeout", "0.5", "call", "order-service", "GET", "/"])
    assert args.timeout == 0.5 and args.service == "order-service"


@pytest.mark.parametrize(
    "argv",
    [("resolve", ""), ("instances", " "), ("chain", ""), ("route", "", "GET", "/")],
)
def test_an_empty_service_name_is_refused(capsys, argv):
    """``resolve ''`` ended in a traceback (TypeError from the source), ``chain ''`` named
    an internal class ("DiscoveryChainQuery needs a service name")."""
    assert "NAME: a service name, not" in refused(capsys, *argv)
