"""A setting that cannot work stops startup under every server, with one message; the
registrar's lines show under each server, once; gunicorn without the hooks says so."""

from __future__ import annotations

import re

import pytest

from tests.harness.ports import free_port
from tests.registry.conftest import instance_status, wait_until

PLAIN = "tests.registry.asgi_apps:plain_app"

#: (server, app) for every way an app of ours can be served.
SERVERS = {
    "gunicorn": ("gunicorn", None),
    "gunicorn-uvicorn": ("gunicorn-uvicorn", None),
    "uvicorn-fastapi": ("uvicorn", None),
    "uvicorn-plain-asgi": ("uvicorn", PLAIN),
    "flask-run": ("flask-cli", None),
    "app.run": ("dev", None),
}


def failed_startup(start_service, server: str, **kw):  # type: ignore[no-untyped-def]
    """Start ``server`` expecting it to refuse: its exit status is non-zero, it never
    served; returns its output."""
    return start_refused(start_service, server, **kw)[1]


def start_refused(start_service, server: str, **kw):  # type: ignore[no-untyped-def]
    """``failed_startup``'s ServiceProcess and output."""
    kind, app = SERVERS[server]
    svc = start_service("127.0.0.1:1", server=kind, app=app, wait=False, **kw)
    try:
        code = svc.wait_exit(30)
    except Exception as exc:
        raise AssertionError(f"{server} kept running; log:\n{svc.log()}") from exc
    log = svc.log()
    assert code != 0, log
    assert not svc.answers()
    assert not re.search(r"Uvicorn running|Listening at|Running on", log), log
    return svc, log


def assert_one_line(log: str, expected: str) -> None:
    """``expected`` is in ``log``, said once, with no traceback around it."""
    assert expected in log, log
    assert log.count("registry: bad configuration") == 1, log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("server", SERVERS)
def test_a_bad_setting_stops_startup_with_one_message(start_service, server: str) -> None:
    log = failed_startup(start_service, server, check_interval="10x")
    expected = (
        "registry: bad configuration: SERVICE_CHECK_INTERVAL: '10x' is not a duration "
        "(e.g. '10s', '1m30s', '500ms', or a number of seconds)"
    )
    assert_one_line(log, expected)


@pytest.mark.parametrize("server", SERVERS)
def test_a_health_path_the_framework_would_refuse_is_the_registrys_line(
    start_service, server: str
) -> None:
    """Checked before the route is added: Starlette's and Flask's own refusals were
    tracebacks (uvicorn, flask run)."""
    log = failed_startup(start_service, server, extra_env={"SERVICE_HEALTH_PATH": "health"})
    expected = "registry: bad configuration: SERVICE_HEALTH_PATH: 'health' must start with '/'"
    assert_one_line(log, expected)


#: Values that got past the checks and then broke the registration, and their lines.
CONSUL_WOULD_FAIL = {
    "meta": ({"SERVICE_META": "a b=1"}, "SERVICE_META: key 'a b' has ' '"),
    "address": (
        {"SERVICE_ADDRESS": "http://127.0.0.1"},
        "SERVICE_ADDRESS: 'http://127.0.0.1' is a URL: give the host only, without 'http://'",
    ),
    "interval": (
        {"SERVICE_CHECK_INTERVAL": "inf"},
        "SERVICE_CHECK_INTERVAL: 'inf' is not a finite duration",
    ),
}


@pytest.mark.parametrize("setting", CONSUL_WOULD_FAIL)
@pytest.mark.parametrize("server", ["gunicorn", "uvicorn-fastapi"])
def test_a_value_the_registration_would_fail_on_stops_startup(
    start_service, server: str, setting: str
) -> None:
    env, problem = CONSUL_WOULD_FAIL[setting]
    log = failed_startup(start_service, server, extra_env=env)
    assert_one_line(log, f"registry: bad configuration: {problem}")


@pytest.mark.parametrize("server", ["gunicorn", "gunicorn-uvicorn", "uvicorn-fastapi"])
def test_service_port_that_is_no_number_is_named(start_service, server: str) -> None:
    log = failed_startup(start_service, server, extra_env={"SERVICE_PORT": "abc"})
    assert "registry: bad configuration: SERVICE_PORT: 'abc' is not an integer" in log, log


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn-fastapi"])
def test_a_service_name_dns_cannot_carry_stops_startup(start_service, server: str) -> None:
    log = failed_startup(start_service, server, name="svc a!")
    assert "registry: bad configuration: SERVICE_NAME: 'svc a!' has ' ' '!'" in log, log


@pytest.mark.parametrize("server", SERVERS)
def test_service_port_other_than_the_served_port_stops_startup(start_service, server: str) -> None:
    kind = SERVERS[server][0]
    if kind.startswith("gunicorn"):  # gunicorn binds SERVICE_PORT unless -b says otherwise
        served = free_port()
        svc, log = start_refused(start_service, server, extra_args=["-b", f"127.0.0.1:{served}"])
        other, option = svc.port, "gunicorn -b"  # the fixture's SERVICE_PORT
    else:
        other = free_port()
        svc, log = start_refused(start_service, server, extra_env={"SERVICE_PORT": str(other)})
        served = svc.port  # the fixture's --port / port=
        option = {"uvicorn": "uvicorn --port", "flask-cli": "flask run --port"}.get(
            kind, "app.run(port=...)"
        )
    assert other != served
    assert (
        f"registry: bad configuration: SERVICE_PORT: {other}, but {option} listens on "
        f"{served}: Consul would send callers to a port nothing listens on"
    ) in log, log


def test_a_forwarded_port_is_registered_as_given(
    consul_agent, consul_client, start_service
) -> None:
    advertised = free_port()
    svc = start_service(
        consul_agent.address, server="uvicorn",
        extra_env={"SERVICE_PORT": str(advertised), "SERVICE_PORT_FORWARDED": "true"},
    )  # fmt: skip
    wait_until(lambda: consul_client.agent.services().get(svc.service_id), 10)
    assert consul_client.agent.services()[svc.service_id]["Port"] == advertised


@pytest.mark.parametrize("server", ["uvicorn-fastapi", "uvicorn-plain-asgi", "gunicorn"])
def test_the_registrars_lines_show_once_like_the_servers_own(
    consul_agent, consul_client, start_service, server: str
) -> None:
    kind, app = SERVERS[server]
    svc = start_service(consul_agent.address, server=kind, app=app)
    wait_until(lambda: instance_status(consul_client, "regtest", svc.service_id), 10)
    wait_until(lambda: "registry: registered" in svc.log(), 5)
    lines = [line for line in svc.log().splitlines() if "registry: registered" in line]
    assert len(lines) == 1, svc.log()
    if kind == "uvicorn":  # uvicorn's own format: "INFO:     Uvicorn running on ..."
        assert lines[0].startswith("INFO:     registry: registered regtest-"), lines
    else:  # gunicorn's error log format
        assert re.match(r"\[.+\] \[\d+\] \[INFO\] registry: registered regtest-", lines[0])


def test_gunicorn_without_the_hooks_says_nothing_registers(start_service) -> None:
    port = free_port()
    svc = start_service(
        "127.0.0.1:1", server="gunicorn", extra_args=["-c", "/dev/null", "-b", f"127.0.0.1:{port}"],
        wait=False,
    )  # fmt: skip
    svc.port = port
    wait_until(svc.answers, 20)
    wait_until(lambda: "nothing registers this instance" in svc.log(), 5)
    assert "run gunicorn -c python:consul_discovery.registry.gunicorn_conf" in svc.log()


def test_gunicorns_settings_dump_leaves_raw_env_values_out(start_service) -> None:
    token = "tok-3f1c9e2a-0000-4000-8000-5ecre7"
    log = failed_startup(
        start_service,
        "gunicorn",
        check_interval="10x",
        extra_args=["--log-level", "debug", "-e", f"CONSUL_HTTP_TOKEN={token}", "-e", "MODE=a=b"],
    )
    assert "Current configuration:" in log, log  # gunicorn did log its settings
    assert "  raw_env: ['CONSUL_HTTP_TOKEN=<not shown>', 'MODE=<not shown>']" in log, log
    assert token not in log


def test_the_raw_env_redactor_hides_a_line_it_cannot_read() -> None:
    import logging

    from consul_discovery.registry.gunicorn_conf import RawEnvRedactor

    dump = "Current configuration:\n  proc_name: None\n  raw_env: [<secret=1>\n  workers: 2"
    record = logging.LogRecord("gunicorn.error", logging.DEBUG, __file__, 1, dump, None, None)
    assert RawEnvRedactor().filter(record)
    assert record.getMessage() == (
        "Current configuration:\n  proc_name: None\n  raw_env: <not shown>\n  workers: 2"
    )
    other = logging.LogRecord("gunicorn.error", logging.INFO, __file__, 1, "raw_env: x", None, None)
    assert RawEnvRedactor().filter(other) and other.getMessage() == "raw_env: x"
