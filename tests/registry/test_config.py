"""Registration.from_env: defaults, precedence, and one documented error per bad setting."""

from __future__ import annotations

import pytest

from consul_discovery.registry import (
    HttpCheck,
    Registration,
    RegistryConfigError,
    TcpCheck,
    TtlCheck,
    Weights,
)
from consul_discovery.registry.durations import format_duration, parse_duration

BASE = {"SERVICE_NAME": "users", "SERVICE_PORT": "8080", "CONSUL_HTTP_ADDR": "127.0.0.1:8500"}


def build(**env: str) -> Registration:
    return Registration.from_env({**BASE, **env})


def test_defaults() -> None:
    reg = build()
    assert reg.name == "users"
    assert reg.port == 8080
    assert reg.address == "127.0.0.1"  # detected: the route towards a loopback agent
    assert reg.service_id.startswith("users-") and reg.service_id.endswith("-8080")
    assert reg.check == HttpCheck(interval=10.0, deregister_after=60.0, path="/health")
    assert reg.weights == Weights(1, 1)
    assert reg.check_id == f"service:{reg.service_id}"
    assert reg.consul.base_url == "http://127.0.0.1:8500"


def test_every_documented_variable_is_read(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    reg = build(
        SERVICE_ID="users-1",
        SERVICE_ADDRESS="10.0.0.7",
        SERVICE_TAGS="blue, api,",
        SERVICE_META="team=core,tier=1",
        SERVICE_VERSION="2.3.4",
        SERVICE_WEIGHT_PASSING="10",
        SERVICE_WEIGHT_WARNING="2",
        SERVICE_CHECK="http",
        SERVICE_HEALTH_PATH="/healthz",
        SERVICE_CHECK_INTERVAL="1500ms",
        SERVICE_CHECK_TIMEOUT="1s",
        SERVICE_DEREGISTER_AFTER="2m",
        SERVICE_SUCCESS_BEFORE_PASSING="2",
        SERVICE_FAILURES_BEFORE_CRITICAL="3",
        SERVICE_DRAIN_SECONDS="7",
        CONSUL_HTTP_ADDR="https://consul.example:8501",
        CONSUL_HTTP_TOKEN="secret",
        CONSUL_CACERT=str(ca),
    )
    assert (reg.service_id, reg.address, reg.tags) == ("users-1", "10.0.0.7", ("blue", "api"))
    assert reg.meta == {"team": "core", "tier": "1", "version": "2.3.4"}
    assert reg.weights == Weights(10, 2)
    assert reg.drain_seconds == 7
    assert (reg.consul.scheme, reg.consul.host, reg.consul.port) == (
        "https",
        "consul.example",
        8501,
    )
    assert (reg.consul.token, reg.consul.ca_file) == ("secret", str(ca))
    assert "secret" not in repr(reg)
    check = reg.service_definition()["Checks"][0]
    assert check == {
        "CheckID": "service:users-1",
        "Name": "users health",
        "HTTP": "http://10.0.0.7:8080/healthz",
        "Method": "GET",
        "Interval": "1500ms",
        "Timeout": "1s",
        "DeregisterCriticalServiceAfter": "120s",
        "SuccessBeforePassing": 2,
        "FailuresBeforeCritical": 3,
    }


def test_check_kinds() -> None:
    assert isinstance(build(SERVICE_CHECK="tcp").check, TcpCheck)
    ttl = build(SERVICE_CHECK="ttl", SERVICE_CHECK_INTERVAL="6s")
    assert isinstance(ttl.check, TtlCheck) and ttl.check.heartbeat == 2.0
    assert ttl.service_definition()["Checks"][0]["TTL"] == "6s"
    tcp = build(SERVICE_CHECK="TCP", SERVICE_ADDRESS="10.0.0.7").service_definition()
    assert tcp["Checks"][0]["TCP"] == "10.0.0.7:8080"


def test_precedence_override_beats_env_beats_bind() -> None:
    env = {**BASE, "SERVICE_ADDRESS": "10.0.0.1"}
    assert Registration.from_env(env, bind=("10.0.0.2", 9000)).address == "10.0.0.1"
    assert Registration.from_env(env, address="10.0.0.3").address == "10.0.0.3"
    no_env = {"SERVICE_NAME": "users"}
    reg = Registration.from_env(no_env, bind=("10.0.0.2", 9000))
    assert (reg.address, reg.port) == ("10.0.0.2", 9000)
    # a wildcard bind is never advertised: detection takes over
    assert Registration.from_env(no_env, bind=("0.0.0.0", 9000)).address == "127.0.0.1"
    assert Registration.from_env(env, port=1234, name="x").port == 1234


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVICE_NAME": ""}, "SERVICE_NAME: required"),
        ({"SERVICE_NAME": "svc a!"}, "SERVICE_NAME: 'svc a!' has ' ' '!': DNS carries only"),
        ({"SERVICE_NAME": "svc_a"}, "SERVICE_NAME: 'svc_a' has '_'"),
        ({"SERVICE_NAME": "svc.a"}, "SERVICE_NAME: 'svc.a' has '.'"),
        ({"SERVICE_NAME": "-svc"}, "SERVICE_NAME: '-svc' starts or ends with a hyphen"),
        ({"SERVICE_NAME": "a" * 64}, "SERVICE_NAME: '" + "a" * 64 + "' is 64 characters long"),
        ({"SERVICE_PORT": ""}, "SERVICE_PORT: required"),
        ({"SERVICE_PORT": "70000"}, "SERVICE_PORT: 70000 is out of range 1-65535"),
        ({"SERVICE_PORT": "0"}, "SERVICE_PORT: 0 is out of range 1-65535"),
        ({"SERVICE_PORT": "http"}, "SERVICE_PORT: 'http' is not an integer"),
        ({"SERVICE_ADDRESS": "0.0.0.0"}, "SERVICE_ADDRESS: '0.0.0.0' is a wildcard"),
        (
            {"SERVICE_ADDRESS": "http://127.0.0.1:18013"},
            "SERVICE_ADDRESS: 'http://127.0.0.1:18013' is a URL: give the host only, "
            "without 'http://'",
        ),
        ({"SERVICE_ADDRESS": "not an ip!"}, "SERVICE_ADDRESS: 'not an ip!' has a space"),
        ({"SERVICE_ADDRESS": "10.0.0.7:8080"}, "SERVICE_ADDRESS: '10.0.0.7:8080' has a port"),
        ({"SERVICE_ADDRESS": "[::1]"}, "SERVICE_ADDRESS: '[::1]' has brackets"),
        ({"SERVICE_ADDRESS": "10.0.0.256"}, "SERVICE_ADDRESS: '10.0.0.256' is not a valid IPv4"),
        (
            {"SERVICE_ADDRESS": "2001:db8::zz"},
            "SERVICE_ADDRESS: '2001:db8::zz' is not a valid IPv6",
        ),
        ({"SERVICE_ADDRESS": "host!"}, "SERVICE_ADDRESS: 'host!' has '!'"),
        ({"SERVICE_ADDRESS": "a..example"}, "SERVICE_ADDRESS: 'a..example' has the label ''"),
        ({"SERVICE_ADDRESS": "::"}, "SERVICE_ADDRESS: '::' is a wildcard"),
        ({"SERVICE_CHECK_INTERVAL": "500ms"}, "SERVICE_CHECK_INTERVAL: 0.5s is below Consul's"),
        ({"SERVICE_CHECK_INTERVAL": "soon"}, "SERVICE_CHECK_INTERVAL: 'soon' is not a duration"),
        ({"SERVICE_CHECK_INTERVAL": "inf"}, "SERVICE_CHECK_INTERVAL: 'inf' is not a finite"),
        ({"SERVICE_CHECK_INTERVAL": "1e400"}, "SERVICE_CHECK_INTERVAL: '1e400' is not a finite"),
        ({"SERVICE_CHECK_INTERVAL": "25h"}, "SERVICE_CHECK_INTERVAL: 90000s is longer than 24h"),
        ({"SERVICE_CHECK_TIMEOUT": "nan"}, "SERVICE_CHECK_TIMEOUT: 'nan' is not a finite"),
        ({"SERVICE_CHECK_TIMEOUT": "48h"}, "SERVICE_CHECK_TIMEOUT: 172800s is longer than 24h"),
        ({"SERVICE_DEREGISTER_AFTER": "Infinity"}, "SERVICE_DEREGISTER_AFTER: 'Infinity' is"),
        ({"SERVICE_DEREGISTER_AFTER": "721h"}, "SERVICE_DEREGISTER_AFTER: 2595600s is longer than"),
        ({"SERVICE_DRAIN_SECONDS": "nan"}, "SERVICE_DRAIN_SECONDS: 'nan' is not a finite duration"),
        ({"SERVICE_DRAIN_SECONDS": "2h"}, "SERVICE_DRAIN_SECONDS: 7200s is longer than 1h"),
        ({"SERVICE_CHECK_TIMEOUT": "0s"}, "SERVICE_CHECK_TIMEOUT: 0.0s must be positive"),
        ({"SERVICE_DEREGISTER_AFTER": "30s"}, "SERVICE_DEREGISTER_AFTER: 30s is below"),
        ({"SERVICE_CHECK": "grpc"}, "SERVICE_CHECK: 'grpc' is not one of http, tcp, ttl"),
        ({"SERVICE_HEALTH_PATH": "health"}, "SERVICE_HEALTH_PATH: 'health' must start with"),
        (
            {"SERVICE_HEALTH_PATH": "health", "SERVICE_CHECK": "ttl"},
            "SERVICE_HEALTH_PATH: 'health' must start with '/'",
        ),
        ({"SERVICE_HEALTH_PATH": "/he alth"}, "SERVICE_HEALTH_PATH: '/he alth' has ' ': give a"),
        ({"SERVICE_HEALTH_PATH": "/h?x=1"}, "SERVICE_HEALTH_PATH: '/h?x=1' has '?'"),
        ({"SERVICE_META": "team"}, "SERVICE_META: 'team' is not key=value"),
        ({"SERVICE_META": "a b=1"}, "SERVICE_META: key 'a b' has ' ': Consul allows only ASCII"),
        ({"SERVICE_META": "k.v=1"}, "SERVICE_META: key 'k.v' has '.'"),
        ({"SERVICE_META": "é=1"}, "SERVICE_META: key 'é' has 'é'"),
        ({"SERVICE_META": "consul-x=1"}, "SERVICE_META: key 'consul-x' starts with 'consul-'"),
        ({"SERVICE_META": "k" * 129 + "=1"}, "SERVICE_META: key 'kkkk"),
        ({"SERVICE_META": "k=" + "é" * 257}, "SERVICE_META: the value of 'k' is 514 bytes long"),
        ({"SERVICE_META": "=1"}, "SERVICE_META: '=1' is not key=value"),
        (
            {"SERVICE_META": ",".join(f"k{n}=v" for n in range(64)), "SERVICE_VERSION": "1"},
            "SERVICE_META: 65 pairs; Consul allows at most 64 (SERVICE_VERSION adds the pair",
        ),
        ({"SERVICE_WEIGHT_PASSING": "0"}, "SERVICE_WEIGHT_PASSING: 0 is out of range"),
        ({"SERVICE_FAILURES_BEFORE_CRITICAL": "-1"}, "SERVICE_FAILURES_BEFORE_CRITICAL: -1"),
        ({"SERVICE_DRAIN_SECONDS": "-3"}, "SERVICE_DRAIN_SECONDS: '-3' is negative"),
        ({"CONSUL_CACERT": "/nonexistent/ca.pem"}, "CONSUL_CACERT: /nonexistent/ca.pem is not"),
        ({"CONSUL_HTTP_ADDR": "ftp://x:1"}, "CONSUL_HTTP_ADDR: invalid Consul address 'ftp://x:1'"),
        ({"CONSUL_HTTP_ADDR": "127.0.0.1:port"}, "CONSUL_HTTP_ADDR: invalid Consul address '127"),
    ],
)
def test_bad_config_names_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(RegistryConfigError) as caught:
        build(**env)
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.setting == message.split(":")[0]


def test_ip_addresses_and_host_names_are_advertised_as_given() -> None:
    for address in ("10.0.0.7", "2001:db8::7", "fe80::1%eth0", "localhost", "svc.example.",
                    "orders_db", "a" * 63 + ".example"):  # fmt: skip
        assert build(SERVICE_ADDRESS=address).address == address
    with pytest.raises(RegistryConfigError, match="SERVICE_WAN_ADDRESS: 'https://w' is a URL"):
        build(SERVICE_WAN_ADDRESS="https://w")


def test_meta_at_consuls_limits_passes() -> None:
    """The largest meta Consul accepts (tests/registry/test_registrar_edges.py registers
    it with a real agent) is accepted as it is."""
    meta = {f"k{n}": "v" for n in range(62)} | {"K_-9" * 32: "é" * 256}
    env = ",".join(f"{k}={v}" for k, v in meta.items())
    assert build(SERVICE_META=env, SERVICE_VERSION="1.2").meta == {**meta, "version": "1.2"}
    assert Registration.from_env(BASE, meta=meta).meta == meta  # an override is checked alike
    with pytest.raises(RegistryConfigError, match=r"^meta: key 'consul-a'"):  # as given
        Registration.from_env(BASE, meta={"consul-a": "1"})


def test_dns_names_pass() -> None:
    for name in ("users", "order-service", "A1", "a" * 63, "7"):
        assert build(SERVICE_NAME=name).name == name
    # tags are labels as often as DNS names: left alone, as Consul itself does
    assert build(SERVICE_TAGS="version=1.2,traefik.enable=true").tags == (
        "version=1.2",
        "traefik.enable=true",
    )


@pytest.mark.parametrize("token", ["LEAKME-tok\n", "LEAKME-tok\r\nX-Injected: yes"])
def test_a_token_a_header_cannot_carry_stops_startup_unshown(token: str) -> None:
    with pytest.raises(RegistryConfigError) as caught:
        build(CONSUL_HTTP_TOKEN=token)
    assert caught.value.setting == "CONSUL_HTTP_TOKEN"
    assert "line break" in str(caught.value)
    assert "LEAKME" not in str(caught.value) and "LEAKME" not in repr(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 80.5}, "port: 80.5 is not an integer"),
        ({"health_path": "hz"}, "health_path: 'hz' must start with '/'"),
        ({"health_path": "hz", "check": HttpCheck()}, "health_path: 'hz' must start with '/'"),
        ({"port": True}, "port: True is not an integer"),
        ({"port": 80.0}, "port: 80.0 is not an integer"),
        ({"port": 70000}, "port: 70000 is out of range 1-65535"),
        ({"drain_seconds": float("nan")}, "drain_seconds: nan is not a finite duration"),
        ({"check": HttpCheck(interval=float("inf"))}, "check.interval: inf is not a"),
        ({"check": HttpCheck(deregister_after=5)}, "check.deregister_after: 5s is below"),
        ({"success_before_passing": 1.5}, "success_before_passing: 1.5 is not an integer"),
        ({"interval": "10x"}, "interval: '10x' is not a duration"),
        ({"interval": "1ms"}, "interval: 0.001s is below Consul's minimum"),
        ({"timeout": "soon"}, "timeout: 'soon' is not a duration"),
        ({"deregister_after": "1000h"}, "deregister_after: 3600000s is longer than 720h"),
        ({"failures_before_critical": 101}, "failures_before_critical: 101 is out of range"),
        ({"check_kind": "udp"}, "check_kind: 'udp' is not one of http, tcp, ttl"),
        ({"connect": "mtls"}, "connect: 'mtls' is not one of native, none"),
        ({"connect": "native", "check_kind": "http"}, "check_kind: http cannot reach"),
        ({"address": "0.0.0.0"}, "address: '0.0.0.0' is a wildcard"),
        ({"name": "bad name"}, "name: 'bad name' has ' '"),
        ({"meta": "a"}, "meta: 'a' is not key=value"),
        ({"wan_address": "10.0.0.8:x"}, "wan_address: 'x' is not an integer"),
        ({"zone": "z"}, "zone: 'z' needs region too"),
        ({"region": "r\x00"}, "region: 'r\\x00' is not a printable name"),
    ],
)
def test_bad_overrides_name_the_parameter_or_setting(overrides: dict, message: str) -> None:
    with pytest.raises(RegistryConfigError) as caught:
        Registration.from_env({}, **{"name": "x", "address": "10.0.0.7", "port": 80, **overrides})
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SERVICE_CHECK_INTERVAL", "10x", "SERVICE_CHECK_INTERVAL: '10x' is not a duration"),
        ("SERVICE_DRAIN_SECONDS", "nan", "SERVICE_DRAIN_SECONDS: 'nan' is not a finite"),
        ("SERVICE_DEREGISTER_AFTER", "5s", "SERVICE_DEREGISTER_AFTER: 5s is below"),
        ("SERVICE_ZONE", "z", "SERVICE_ZONE: 'z' needs SERVICE_REGION too"),
    ],
)
def test_bad_variables_name_the_variable(variable: str, value: str, message: str) -> None:
    """The same values from the environment are named by their variable."""
    env = {"SERVICE_NAME": "x", "SERVICE_ADDRESS": "10.0.0.7", "SERVICE_PORT": "80"}
    with pytest.raises(RegistryConfigError) as caught:
        Registration.from_env({**env, variable: value})
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_drain_of_zero_is_kept_not_the_default() -> None:
    given = Registration.from_env({}, name="x", address="10.0.0.7", port=80, drain_seconds=0)
    assert given.drain_seconds == 0
    assert build(SERVICE_DRAIN_SECONDS="0").drain_seconds == 0


def test_durations_at_the_ceilings_pass() -> None:
    reg = build(
        SERVICE_CHECK_INTERVAL="24h", SERVICE_CHECK_TIMEOUT="24h", SERVICE_DEREGISTER_AFTER="720h",
        SERVICE_DRAIN_SECONDS="1h",
    )  # fmt: skip
    assert (reg.check.interval, reg.check.deregister_after, reg.drain_seconds) == (
        86400, 2592000, 3600,
    )  # fmt: skip
    assert Registration.from_env({}, name="x", address="10.0.0.7", port=80).port == 80


def test_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        Registration.from_env(BASE, colour="blue")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("2", 2), ("1h", 3600), (3, 3)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("X", text) == seconds


def test_format_duration() -> None:
    assert [format_duration(s) for s in (10, 60.0, 1.5, 0.25)] == ["10s", "60s", "1500ms", "250ms"]


def test_a_wan_address_is_advertised_as_wan_and_wan_ipv4() -> None:
    """SERVICE_WAN_ADDRESS: what instances in other datacenters are reached at
    (``host`` with the service's port, ``host:port``, or ``[v6]:port``)."""
    assert build().wan_address is None and "TaggedAddresses" not in build().service_definition()
    reg = build(SERVICE_WAN_ADDRESS="198.51.100.7")
    tagged = reg.service_definition()["TaggedAddresses"]
    port = reg.port
    assert tagged == {
        "wan": {"Address": "198.51.100.7", "Port": port},
        "wan_ipv4": {"Address": "198.51.100.7", "Port": port},
    }
    assert build(SERVICE_WAN_ADDRESS="198.51.100.7:8443").tagged_addresses()["wan"] == {
        "Address": "198.51.100.7",
        "Port": 8443,
    }
    v6 = build(SERVICE_WAN_ADDRESS="[2001:db8::7]:8443").tagged_addresses()
    assert v6["wan_ipv6"] == {"Address": "2001:db8::7", "Port": 8443}
    for bad, words in (
        ("0.0.0.0", "wildcard"),
        ("198.51.100.7:http", "not an integer"),
        ("198.51.100.7:0", "out of range"),
        ("[2001:db8::7", "not \\[address\\]:port"),
    ):
        with pytest.raises(RegistryConfigError, match=f"SERVICE_WAN_ADDRESS.*{words}"):
            build(SERVICE_WAN_ADDRESS=bad)


def test_region_and_zone_become_the_registrations_locality() -> None:
    assert build().locality is None and "Locality" not in build().service_definition()
    reg = build(SERVICE_REGION="eu", SERVICE_ZONE="eu-1b")
    assert reg.service_definition()["Locality"] == {"Region": "eu", "Zone": "eu-1b"}
    assert build(SERVICE_REGION="eu").service_definition()["Locality"] == {
        "Region": "eu",
        "Zone": "",
    }
    with pytest.raises(RegistryConfigError, match=r"SERVICE_ZONE.*needs SERVICE_REGION"):
        build(SERVICE_ZONE="eu-1b")
