"""``Registration``: everything Consul needs to know about one instance, read from env.

Precedence for every field: explicit keyword override > environment variable >
detection (the bound address, the route towards the Consul agent) > default.
Bad values raise ``RegistryConfigError`` naming the setting, at startup; the service
name must be one DNS label (``registry.dns``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from consul_discovery.connection import ConsulConfigError, ConsulConnection
from consul_discovery.connection.names import SERVICE_NAME_RULE
from consul_discovery.registry.checks import (
    MAX_DEREGISTER_AFTER,
    MAX_INTERVAL,
    MIN_DEREGISTER_AFTER,
    MIN_INTERVAL,
    CheckSpec,
    HttpCheck,
    TcpCheck,
    TtlCheck,
)
from consul_discovery.registry.dns import dns_label_problem
from consul_discovery.registry.durations import check_at_most, parse_duration
from consul_discovery.registry.errors import RegistryConfigError
from consul_discovery.registry.hosts import address_problem
from consul_discovery.registry.meta import MAX_PAIRS, meta_problem

_WILDCARDS = {"0.0.0.0", "::", ""}
#: The longest SIGTERM drain the settings take: longer is a typo, not a choice.
MAX_DRAIN_SECONDS = 3600.0


#: The registry's name for the one Consul connection value (consul_connection owns it).
ConsulSettings = ConsulConnection


def consul_from_env(environ: Mapping[str, str]) -> ConsulConnection:
    """The agent connection from Consul's variables, errors as RegistryConfigError."""
    try:
        return ConsulConnection.from_env(environ)
    except ConsulConfigError as exc:
        raise RegistryConfigError(exc.setting, exc.problem) from exc


@dataclass(frozen=True)
class Weights:
    """DNS SRV / load-balancing weights for a passing and a warning instance."""

    passing: int = 1
    warning: int = 1


@dataclass(frozen=True)
class Locality:
    """Where an instance runs (Consul's ``Locality``): ``region``, and a ``zone`` in it."""

    region: str
    zone: str = ""


@dataclass(frozen=True)
class Registration:
    """One service instance as it is registered with Consul (a value; build with from_env)."""

    name: str
    service_id: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)  # read-only by convention
    weights: Weights = Weights()
    check: CheckSpec = field(default_factory=HttpCheck)
    drain_seconds: float = 5.0
    consul: ConsulConnection = field(default_factory=ConsulConnection)
    connect_native: bool = False  # SERVICE_CONNECT=native: serves mTLS (consul_discovery.mesh)
    wan_address: str | None = None  # SERVICE_WAN_ADDRESS: reached from other datacenters
    wan_port: int | None = None  # its port (None: ``port``)
    locality: Locality | None = None  # SERVICE_REGION/SERVICE_ZONE (None: the agent's)

    @property
    def check_id(self) -> str:
        """The CheckID of the instance's health check (explicit, or "service:<id>")."""
        return self.check.check_id or f"service:{self.service_id}"

    def service_definition(self) -> dict[str, Any]:
        """The JSON body of PUT /v1/agent/service/register for this instance."""
        connect = {"Connect": {"Native": True}} if self.connect_native else {}
        tagged = {"TaggedAddresses": self.tagged_addresses()} if self.wan_address else {}
        where = self.locality
        locality = {"Locality": {"Region": where.region, "Zone": where.zone}} if where else {}
        return {
            "ID": self.service_id,
            "Name": self.name,
            "Address": self.address,
            "Port": self.port,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
            "Weights": {"Passing": self.weights.passing, "Warning": self.weights.warning},
            "Checks": [
                self.check.definition(self.address, self.port, self.check_id, f"{self.name} health")
            ],
            **connect,
            **tagged,
            **locality,
        }

    def tagged_addresses(self) -> dict[str, dict[str, Any]]:
        """The WAN address advertised to other datacenters, as ``wan`` and ``wan_ipv4``
        (or ``wan_ipv6``): Consul fills ``wan_ipv4`` with the LAN address when it is not
        given, and a translating agent prefers it to ``wan``."""
        if not self.wan_address:
            return {}
        wan = {"Address": self.wan_address, "Port": self.wan_port or self.port}
        family = "wan_ipv6" if ":" in self.wan_address else "wan_ipv4"
        return {"wan": wan, family: dict(wan)}

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        bind: tuple[str, int] | None = None,
        **overrides: Any,
    ) -> Registration:
        """Build from SERVICE_* and CONSUL_* variables; ``overrides`` win over env.

        ``bind`` is the (host, port) the server actually listens on: it fills in the
        port and, unless it is a wildcard, the address when neither is set explicitly.
        Keyword overrides use the field names (``name``, ``port``, ``check``, ...) plus
        ``check_kind``, ``interval``, ``timeout``, ``health_path``, ``version``.
        """
        return _build(os.environ if environ is None else environ, bind, overrides)


class Given(NamedTuple):
    """One setting's value (None: not given) and the name it was given by: the keyword
    override's when it came from one, else the environment variable's. Errors name
    ``setting``, so they name what the user actually wrote."""

    value: Any
    setting: str


def _get(env: Mapping[str, str], overrides: dict[str, Any], key: str, var: str) -> Given:
    """The one reading of a setting: keyword override ``key`` > variable ``var``."""
    if key in overrides and overrides[key] is not None:
        return Given(overrides.pop(key), key)
    overrides.pop(key, None)
    value = env.get(var, "").strip()
    return Given(value or None, var)


def _int(setting: str, value: Any, low: int, high: int) -> int:
    """``value`` (an int, or a string of one) if it is in ``low``-``high``; a float or a
    bool is no integer here, though int() would take it (80.5 -> 80, True -> 1)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RegistryConfigError(setting, f"{value!r} is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise RegistryConfigError(setting, f"{value!r} is not an integer") from None
    if not low <= number <= high:
        raise RegistryConfigError(setting, f"{number} is out of range {low}-{high}")
    return number


def _pairs(setting: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    result: dict[str, str] = {}
    for item in str(value).split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise RegistryConfigError(setting, f"{item.strip()!r} is not key=value")
        result[key.strip()] = val.strip()
    return result


def _meta(given: Given, version: Given) -> dict[str, str]:
    """SERVICE_META's pairs and SERVICE_VERSION (as ``version``), as Consul accepts them."""
    meta = _pairs(given.setting, given.value or {})
    if version.value:
        meta["version"] = str(version.value)
    problem = meta_problem(meta)
    if problem is not None:
        if version.value and len(meta) > MAX_PAIRS:
            problem += f" ({version.setting} adds the pair 'version')"
        raise RegistryConfigError(given.setting, problem)
    return meta


def _check_address(setting: str, address: str) -> str:
    """``address`` if it is one IP address or host name (``registry.hosts``)."""
    if address in _WILDCARDS:
        raise RegistryConfigError(
            setting, f"{address!r} is a wildcard bind address, not one consumers can reach"
        )
    problem = address_problem(address)
    if problem is not None:
        raise RegistryConfigError(setting, f"{address!r} {problem}")
    return address


def health_path(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> str:
    """The health route's path, which Consul's HTTP check GETs: the ``health_path``
    override, else SERVICE_HEALTH_PATH, else ``/health``.

    The one check of it, shared by ``Registration.from_env`` and the adapters (which
    call it before they add the route): raises ``RegistryConfigError`` naming where the
    path came from unless it starts with '/' and has no space, '?' or '#'.
    """
    given = (overrides or {}).get("health_path") or None
    setting = "health_path" if given is not None else "SERVICE_HEALTH_PATH"
    path = str(given if given is not None else environ.get(setting, "").strip() or "/health")
    if not path.startswith("/"):
        raise RegistryConfigError(setting, f"{path!r} must start with '/'")
    bad = sorted({c for c in path if c.isspace() or c in "?#"})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise RegistryConfigError(setting, f"{path!r} has {shown}: give a path only")
    return path


def detect_address(consul: ConsulConnection) -> str:
    """The local IP on the route towards the Consul agent (no packet is sent)."""
    try:
        target = socket.gethostbyname(consul.host)
        if ipaddress.ip_address(target).is_loopback:
            return "127.0.0.1"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((target, consul.port))
            return probe.getsockname()[0]
    except OSError as exc:
        raise RegistryConfigError(
            "SERVICE_ADDRESS", f"not set and could not be detected ({exc}); set it"
        ) from exc


def _build(
    env: Mapping[str, str], bind: tuple[str, int] | None, ov: dict[str, Any]
) -> Registration:
    ov = dict(ov)
    consul = ov.pop("consul", None) or consul_from_env(env)

    name, name_setting = _get(env, ov, "name", "SERVICE_NAME")
    if not name:
        raise RegistryConfigError("SERVICE_NAME", "required (the service's name in Consul)")
    problem = dns_label_problem(str(name))
    if problem is not None:
        raise RegistryConfigError(
            name_setting,
            f"{name!r} {problem}; Consul serves it as <name>.service.consul, so it must be "
            f"{SERVICE_NAME_RULE}",
        )

    port_raw, port_setting = _get(env, ov, "port", "SERVICE_PORT")
    if port_raw is None and bind is not None:
        port_raw = bind[1]
    if port_raw is None:
        raise RegistryConfigError("SERVICE_PORT", "required (the port consumers should call)")
    port = _int(port_setting, port_raw, 1, 65535)

    address, address_setting = _get(env, ov, "address", "SERVICE_ADDRESS")
    if address is not None:
        address = _check_address(address_setting, str(address))
    elif bind is not None and bind[0] not in _WILDCARDS:
        address = bind[0]
    else:
        address = detect_address(consul)

    service_id = _get(env, ov, "service_id", "SERVICE_ID").value or (
        f"{name}-{socket.gethostname()}-{port}"
    )
    tags_raw = _get(env, ov, "tags", "SERVICE_TAGS").value or ()
    tags = (
        tuple(t.strip() for t in tags_raw.split(",") if t.strip())
        if isinstance(tags_raw, str)
        else tuple(tags_raw)
    )
    meta = _meta(_get(env, ov, "meta", "SERVICE_META"), _get(env, ov, "version", "SERVICE_VERSION"))
    weights = ov.pop("weights", None) or Weights(
        passing=_int("SERVICE_WEIGHT_PASSING", env.get("SERVICE_WEIGHT_PASSING") or 1, 1, 65535),
        warning=_int("SERVICE_WEIGHT_WARNING", env.get("SERVICE_WEIGHT_WARNING") or 1, 1, 65535),
    )
    connect_native = _connect(_get(env, ov, "connect", "SERVICE_CONNECT"))
    # Checked whatever the check: the adapters serve the health route there all the same.
    path = health_path(env, ov)
    ov.pop("health_path", None)
    check = ov.pop("check", None)
    if check is not None:  # a CheckSpec of the caller's: its fields are named as such
        _validate_check(check, {f: f"check.{f}" for f in _CHECK_DURATIONS})
    else:
        check = _check_from_env(env, ov, path, connect_native)
    given, drain_setting = _get(env, ov, "drain_seconds", "SERVICE_DRAIN_SECONDS")
    drain = parse_duration(drain_setting, 5 if given is None else given)  # 0: none
    check_at_most(drain_setting, drain, MAX_DRAIN_SECONDS)
    wan_address, wan_port = _wan(_get(env, ov, "wan_address", "SERVICE_WAN_ADDRESS"))
    locality = _locality(
        _get(env, ov, "region", "SERVICE_REGION"), _get(env, ov, "zone", "SERVICE_ZONE")
    )
    if ov:
        raise TypeError(f"unknown Registration override(s): {', '.join(sorted(ov))}")
    return Registration(
        name=str(name),
        service_id=str(service_id),
        address=address,
        port=port,
        tags=tags,
        meta=meta,
        weights=weights,
        check=check,
        drain_seconds=drain,
        consul=consul,
        connect_native=connect_native,
        wan_address=wan_address,
        wan_port=wan_port,
        locality=locality,
    )


def _locality(region: Given, zone: Given) -> Locality | None:
    """SERVICE_REGION and SERVICE_ZONE (None: neither; the instance inherits its agent's)."""
    if region.value is None and zone.value is None:
        return None
    if region.value is None:  # asked for in the zone's own terms: keyword or variable
        wanted = "region" if zone.setting == "zone" else region.setting
        raise RegistryConfigError(
            zone.setting, f"{zone.value!r} needs {wanted} too (Consul refuses a zone without one)"
        )
    for value, setting in (region, zone):
        if value is not None and not str(value).isprintable():
            raise RegistryConfigError(setting, f"{value!r} is not a printable name")
    return Locality(str(region.value), str(zone.value or ""))


def _wan(given: Given) -> tuple[str | None, int | None]:
    """SERVICE_WAN_ADDRESS: ``host``, ``host:port`` or ``[v6]:port`` (None: not set)."""
    value, setting = given
    if value is None:
        return None, None
    text = str(value).strip()
    if "://" in text:  # a URL: said as such, not as a port that is no number
        _check_address(setting, text)
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise RegistryConfigError(setting, f"{text!r} is not [address]:port")
        port = rest[1:] or None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    host = _check_address(setting, host.strip())
    if port is None:
        return host, None
    return host, _int(setting, port, 1, 65535)


def _connect(given: Given) -> bool:
    """SERVICE_CONNECT: ``native`` (serves Connect mTLS itself) or ``none`` (default)."""
    kind = str(given.value or "none").strip().lower()
    if kind not in ("native", "none"):
        raise RegistryConfigError(given.setting, f"{given.value!r} is not one of native, none")
    return kind == "native"


def _check_from_env(
    env: Mapping[str, str], ov: dict[str, Any], path: str, connect_native: bool = False
) -> CheckSpec:
    # A Connect-native instance serves mTLS only: Consul's HTTP check has no client
    # certificate, so its health is a TTL check fed from inside (no other path to the app).
    default_kind = "ttl" if connect_native else "http"
    given_kind, kind_setting = _get(env, ov, "check_kind", "SERVICE_CHECK")
    kind = str(given_kind or default_kind).lower()
    if connect_native and kind == "http":
        raise RegistryConfigError(
            kind_setting, "http cannot reach a Connect-native (mTLS-only) instance; use ttl"
        )
    interval, interval_setting = _get(env, ov, "interval", "SERVICE_CHECK_INTERVAL")
    timeout, timeout_setting = _get(env, ov, "timeout", "SERVICE_CHECK_TIMEOUT")
    deregister, deregister_setting = _get(env, ov, "deregister_after", "SERVICE_DEREGISTER_AFTER")
    names = {
        "interval": interval_setting,
        "timeout": timeout_setting,
        "deregister_after": deregister_setting,
    }
    successes = _get(env, ov, "success_before_passing", "SERVICE_SUCCESS_BEFORE_PASSING")
    failures = _get(env, ov, "failures_before_critical", "SERVICE_FAILURES_BEFORE_CRITICAL")
    common: dict[str, Any] = {
        "interval": parse_duration(interval_setting, interval or "10s"),
        "timeout": parse_duration(timeout_setting, timeout) if timeout else None,
        "check_id": _get(env, ov, "check_id", "SERVICE_CHECK_ID").value,
        "deregister_after": parse_duration(deregister_setting, deregister or "1m"),
        "success_before_passing": _int(successes.setting, successes.value or 0, 0, 100),
        "failures_before_critical": _int(failures.setting, failures.value or 0, 0, 100),
    }
    if kind == "http":
        check: CheckSpec = HttpCheck(path=path, **common)
    elif kind == "tcp":
        check = TcpCheck(**common)
    elif kind == "ttl":
        check = TtlCheck(**common)
    else:
        raise RegistryConfigError(kind_setting, f"{kind!r} is not one of http, tcp, ttl")
    _validate_check(check, names)
    return check


#: The check's durations, by field: what ``_validate_check`` names.
_CHECK_DURATIONS = ("interval", "timeout", "deregister_after")


def _validate_check(check: CheckSpec, names: Mapping[str, str]) -> None:
    """Consul's floors and our ceilings for the check's durations (also for ``check=``);
    ``names`` says what each field was given as (its keyword, variable or ``check.*``)."""
    check_at_most(names["interval"], check.interval, MAX_INTERVAL)
    if check.timeout is not None:
        check_at_most(names["timeout"], check.timeout, MAX_INTERVAL)
    check_at_most(names["deregister_after"], check.deregister_after, MAX_DEREGISTER_AFTER)
    if check.interval < MIN_INTERVAL:
        raise RegistryConfigError(
            names["interval"], f"{check.interval}s is below Consul's minimum of {MIN_INTERVAL:g}s"
        )
    if check.timeout is not None and check.timeout <= 0:
        raise RegistryConfigError(names["timeout"], f"{check.timeout}s must be positive")
    if check.deregister_after < MIN_DEREGISTER_AFTER:
        raise RegistryConfigError(
            names["deregister_after"],
            f"{check.deregister_after:g}s is below Consul's minimum of 1m",
        )
