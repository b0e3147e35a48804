"""``ConsulConnection``: where the Consul agent is and how to talk to it, as one value.

Read from Consul's own environment variables, with the ``consul`` CLI's meaning:

==========================  ==========================================================
CONSUL_HTTP_ADDR            ``host:port``, ``http(s)://host:port`` or ``[v6]:port``
                            (default ``127.0.0.1:8500``). As for the CLI, an address
                            without a port means the scheme's port, 80 or 443, not
                            8500 (see ``addresses``)
CONSUL_HTTP_SSL             ``true``: https, even for an ``http://`` address (the CLI
                            never reverts to http when TLS was asked for)
CONSUL_HTTP_SSL_VERIFY      ``false``: do not verify the agent's certificate
CONSUL_HTTP_TOKEN           ACL token
CONSUL_HTTP_TOKEN_FILE      file holding the ACL token; wins over CONSUL_HTTP_TOKEN,
                            as in Consul's own API client
CONSUL_CACERT               CA bundle (PEM file) to verify the agent with
CONSUL_CAPATH               directory of CA certificates (PEM files)
CONSUL_CLIENT_CERT / _KEY   client certificate and key (``verify_incoming`` agents)
CONSUL_TLS_SERVER_NAME      name to expect in the agent's certificate (and send as SNI)
==========================  ==========================================================

An explicit keyword argument of ``from_env`` beats the environment (py-consul lets
``CONSUL_HTTP_TOKEN`` override an explicit token; we do not). Bad values raise
``ConsulConfigError`` naming the variable. The token never appears in a repr, a log line
or a URL: it travels in the ``X-Consul-Token`` header only.

The clients this module builds (requests ``Session``, py-consul ``Consul``, httpx
keyword arguments) are the only way the rest of the platform reaches Consul.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from consul_discovery.connection.addresses import (
    SCHEME_PORTS,
    host_port,
    parse_address,
    split_address,
)

if TYPE_CHECKING:
    import consul

DEFAULT_ADDRESS = "127.0.0.1:8500"
TOKEN_HEADER = "X-Consul-Token"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConsulConfigError(ValueError):
    """A Consul connection setting is invalid; ``setting`` names it."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        self.problem = message
        super().__init__(f"{setting}: {message}")


@dataclass(frozen=True)
class ConsulConnection:
    """How to reach one Consul agent's HTTP API (address, TLS, ACL token, timeouts).

    ``connect_timeout`` bounds connecting; ``read_timeout`` bounds a non-blocking call
    (a blocking query adds its own wait on top). ``verify`` false turns certificate
    verification off (CONSUL_HTTP_SSL_VERIFY=false); ``ca_file``/``ca_path`` name what
    to verify with, else the system store.
    """

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    ca_file: str | None = None
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls_server_name: str | None = None
    verify: bool = True
    connect_timeout: float = 3.0
    read_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ConsulConfigError("scheme", f"must be http or https, not {self.scheme!r}")
        if not 0 < self.port < 65536:
            raise ConsulConfigError("port", f"{self.port} is not a TCP port")
        if bool(self.client_cert) != bool(self.client_key):
            raise ConsulConfigError(
                "CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY", "a client certificate needs its key"
            )
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConsulConfigError("timeout", "connect and read timeouts must be > 0")

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "token":
                if value:
                    shown.append("token=<redacted>")
                continue
            if value != f.default:
                shown.append(f"{f.name}={value!r}")
        return f"ConsulConnection({', '.join(shown)})"

    # ---- building one ---------------------------------------------------------------

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ConsulConnection:
        """Read Consul's environment variables; keyword ``overrides`` win over them.

        ``overrides`` may name any field, plus ``address`` (parsed like
        CONSUL_HTTP_ADDR). A ``token_file`` (given or from the environment) is read now;
        an explicit ``token`` wins over any file.
        """
        env = os.environ if environ is None else environ
        ov = dict(overrides)
        unknown = set(ov) - {f.name for f in fields(cls)} - {"address"}
        if unknown:
            raise TypeError(f"unknown ConsulConnection setting(s): {', '.join(sorted(unknown))}")

        ssl = _flag(env, "CONSUL_HTTP_SSL", False)
        address = ov.pop("address", None)
        setting = "address" if address else "CONSUL_HTTP_ADDR"
        raw = address or env.get("CONSUL_HTTP_ADDR", "").strip() or DEFAULT_ADDRESS
        try:
            scheme, host, explicit_port = split_address(raw)
        except ValueError as exc:
            raise ConsulConfigError(setting, str(exc)) from exc
        if ssl:
            scheme = "https"  # the CLI: "never revert to http if TLS was explicitly requested"
        port = SCHEME_PORTS[scheme] if explicit_port is None else explicit_port

        values: dict[str, Any] = {
            "host": host,
            "port": port,
            "scheme": scheme,
            "verify": _flag(env, "CONSUL_HTTP_SSL_VERIFY", True),
            "ca_file": _path(env, "CONSUL_CACERT", directory=False),
            "ca_path": _path(env, "CONSUL_CAPATH", directory=True),
            "client_cert": _path(env, "CONSUL_CLIENT_CERT", directory=False),
            "client_key": _path(env, "CONSUL_CLIENT_KEY", directory=False),
            "tls_server_name": env.get("CONSUL_TLS_SERVER_NAME") or None,
            "token_file": env.get("CONSUL_HTTP_TOKEN_FILE") or None,
            "token": env.get("CONSUL_HTTP_TOKEN") or None,
        }
        explicit_token = ov.pop("token", None)
        explicit_file = ov.pop("token_file", None)
        values.update(ov)
        if explicit_token is not None:
            values["token"] = explicit_token or None
            values["token_file"] = None
        elif explicit_file is not None:
            values["token_file"] = explicit_file
            values["token"] = _read_token(explicit_file, "token_file")
        elif values["token_file"]:
            values["token"] = _read_token(values["token_file"], "CONSUL_HTTP_TOKEN_FILE")
        return cls(**values)

    @classmethod
    def resolve(
        cls,
        connection: ConsulConnection | None = None,
        *,
        address: str | None = None,
        token: str | None = None,
    ) -> ConsulConnection:
        """``connection`` (default: ``from_env()``) with ``address``/``token``, when given,
        overriding its own: how a client that takes all three decides where to go."""
        if connection is None:
            return cls.from_env(address=address, token=token)
        if address is not None:
            try:
                scheme, host, port = parse_address(address, default_scheme=connection.scheme)
            except ValueError as exc:
                raise ConsulConfigError("address", str(exc)) from exc
            connection = replace(connection, scheme=scheme, host=host, port=port)
        if token is not None:
            connection = connection.with_token(token)
        return connection

    def with_token(self, token: str | None) -> ConsulConnection:
        """The same connection with another ACL token (None: the agent's default)."""
        return replace(self, token=token or None, token_file=None)

    # ---- what a client needs --------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` (an IPv6 literal bracketed); never carries the token."""
        return host_port(self.host, self.port)

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` of the agent's HTTP API."""
        return f"{self.scheme}://{self.address}"

    def headers(self) -> dict[str, str]:
        """Request headers every call carries (the ACL token, when there is one)."""
        return {TOKEN_HEADER: self.token} if self.token else {}

    def requests_verify(self) -> bool | str:
        """requests' ``verify``: False, a CA file or directory, or True (system store)."""
        if self.scheme != "https":
            return True
        if not self.verify:
            return False
        return self.ca_file or self.ca_path or True

    def requests_cert(self) -> tuple[str, str] | None:
        """requests' ``cert``: the client certificate and key, if configured."""
        if self.client_cert and self.client_key:
            return (self.client_cert, self.client_key)
        return None

    def session(self, *, pool_maxsize: int = 10) -> requests.Session:
        """A requests Session for this agent: TLS set up, no proxy env, no netrc.

        The token is a default header of the session, so it is never part of a URL.
        """
        session = requests.Session()
        session.trust_env = False  # the agent directly: no HTTP(S)_PROXY, no ~/.netrc
        session.verify = self.requests_verify()
        session.cert = self.requests_cert()
        session.headers.update(self.headers())
        adapter: HTTPAdapter
        if self.scheme == "https" and self.tls_server_name and self.verify:
            adapter = _ServerNameAdapter(self.tls_server_name, pool_maxsize=pool_maxsize)
        else:
            adapter = HTTPAdapter(pool_maxsize=pool_maxsize)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def py_consul(self, *, timeout: float | None = None) -> consul.Consul:
        """A py-consul client on this connection (its env lookups overridden)."""
        import consul  # py-consul

        client = consul.Consul(
            host=self.host,
            port=self.port,
            scheme=self.scheme,
            verify=self.requests_verify(),
            cert=self.requests_cert(),
        )
        client.http.session.close()
        client.http.session = self.session()
        client.http.connections_timeout = self.read_timeout if timeout is None else timeout
        # py-consul reads $CONSUL_HTTP_TOKEN over an explicit token; set ours last.
        client.token = self.token
        return client

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSLContext for https (CA, client certificate, verification), else None."""
        if self.scheme != "https":
            return None
        context = ssl.create_default_context(cafile=self.ca_file, capath=self.ca_path)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert and self.client_key:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def httpx_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client``/``AsyncClient`` reaching this agent.

        With ``tls_server_name`` set, pass ``extensions={"sni_hostname": ...}`` per
        request (``request_extensions()``) so the certificate is checked for that name.
        """
        kwargs: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": self.headers(),
            "trust_env": False,
        }
        context = self.ssl_context()
        if context is not None:
            kwargs["verify"] = context
        return kwargs

    def request_extensions(self) -> dict[str, Any]:
        """Per-request httpx extensions (the TLS server name, when one is set)."""
        if self.scheme == "https" and self.tls_server_name:
            return {"sni_hostname": self.tls_server_name}
        return {}


class _ServerNameAdapter(HTTPAdapter):
    """An HTTPAdapter that expects ``server_name`` in the certificate and sends it as SNI."""

    def __init__(self, server_name: str, **kwargs: Any) -> None:
        self.server_name = server_name
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Pools verify the certificate against ``server_name`` instead of the host."""
        kwargs["server_hostname"] = self.server_name
        kwargs["assert_hostname"] = self.server_name
        super().init_poolmanager(*args, **kwargs)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConsulConfigError(name, f"{env[name]!r} is not a boolean (true or false)")


def _path(env: Mapping[str, str], name: str, *, directory: bool) -> str | None:
    value = env.get(name) or None
    if value is None:
        return None
    if directory and not os.path.isdir(value):
        raise ConsulConfigError(name, f"{value} is not a directory")
    if not directory and not (os.path.isfile(value) and os.access(value, os.R_OK)):
        raise ConsulConfigError(name, f"{value} is not a readable file")
    return value


def _read_token(path: str, setting: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise ConsulConfigError(setting, f"cannot read {path}: {exc.strerror}") from exc
    return token or None
