"""``ConsulConnection``: where the Consul agent is and how to talk to it, as one value.

Read from Consul's own environment variables, with the ``consul`` CLI's meaning:

==========================  ==========================================================
CONSUL_HTTP_ADDR            ``host:port``, ``http(s)://host:port`` or ``[v6]:port``
                            (default ``127.0.0.1:8500``). As for the CLI, an address
                            without a port means the scheme's port, 80 or 443, not
                            8500 (see ``addresses``). Several addresses, comma-separated
                            (each spelled as one is), name several servers: see below
CONSUL_HTTP_SSL             ``true``: https, even for an ``http://`` address (the CLI
                            never reverts to http when TLS was asked for)
CONSUL_HTTP_SSL_VERIFY      ``false``: do not verify the agent's certificate
CONSUL_HTTP_TOKEN           ACL token, used as it is (as by the CLI)
CONSUL_HTTP_TOKEN_FILE      file holding the ACL token; wins over CONSUL_HTTP_TOKEN,
                            as in Consul's own API client. Trimmed of surrounding
                            whitespace, as by the CLI; an empty file is an error (the
                            CLI would quietly fall back to CONSUL_HTTP_TOKEN or none)
CONSUL_CACERT               CA bundle (PEM file) to verify the agent with
CONSUL_CAPATH               directory of CA certificates (PEM files)
CONSUL_CLIENT_CERT / _KEY   client certificate and key (``verify_incoming`` agents)
CONSUL_TLS_SERVER_NAME      name to expect in the agent's certificate (and send as SNI)
CONSUL_DISCOVERY_STALE      ``true``: reads (GET) ask for ``?stale`` (any server answers
                            from its own state) unless a query asks otherwise (ours)
CONSUL_DISCOVERY_MAX_STALE  how stale a ``?stale`` answer may be (``10s``, ``500ms``,
                            ``2m`` or seconds), judged on ``X-Consul-LastContact``; an
                            older one is asked again of the leader. Implies stale reads
==========================  ==========================================================

**Several addresses** (agentless: talking to the servers directly):
``CONSUL_HTTP_ADDR=https://10.0.0.1:8501,https://10.0.0.2:8501,https://10.0.0.3:8501``
or ``from_env(addresses=[...])``. Every other setting (TLS, token, server name) is
shared by all of them (servers reached by IP present ``server.<dc>.consul``: set
CONSUL_TLS_SERVER_NAME); one scheme for all. ``servers`` holds the list and
``host``/``port``/``scheme`` its first address; a single address keeps exactly the
CLI's meaning and ``servers`` stays empty. Reads and watches spread over the list and
fail over between its servers (``consul_connection.server_routing``); registering an
instance needs an agent, so the registrar talks to the first address only
(``registry/README.md``).

An explicit keyword argument of ``from_env`` beats the environment (py-consul lets
``CONSUL_HTTP_TOKEN`` override an explicit token; we do not). Bad values raise
``ConsulConfigError`` naming the variable. The token never appears in a repr, a log line
or a URL: it travels in the ``X-Consul-Token`` header only, so one with a character a
header cannot carry (a line break, a control character, whitespace, non-ASCII) is refused
wherever it comes from (``env_values.check_token``), its value never shown.

The clients this module builds (requests ``Session``, py-consul ``Consul``, httpx
keyword arguments) are the only way the rest of the platform reaches Consul.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import requests

from consul_discovery.connection.addresses import host_port
from consul_discovery.connection.env_values import (
    ConsulConfigError,
    check_token,
    env_duration,
    env_flag,
    env_path,
    read_addresses,
    read_token,
)
from consul_discovery.connection.servers import ServerAddress
from consul_discovery.connection.url_token import TOKEN_HEADER, TokenHeaderAdapter

if TYPE_CHECKING:
    import consul

DEFAULT_ADDRESS = "127.0.0.1:8500"


@dataclass(frozen=True)
class ConsulConnection:
    """How to reach Consul's HTTP API (address(es), TLS, ACL token, timeouts).

    ``connect_timeout`` bounds connecting; ``read_timeout`` bounds a non-blocking call
    (a blocking query adds its own wait on top). ``verify`` false turns certificate
    verification off (CONSUL_HTTP_SSL_VERIFY=false); ``ca_file``/``ca_path`` name what
    to verify with, else the system store. ``servers``: every address when several were
    given (two or more; the first is ``scheme``/``host``/``port``), else empty.
    ``stale``: reads ask for ``?stale``; ``max_stale`` (seconds, None: no bound) is how
    long ago the answering server may have heard from the leader (``X-Consul-LastContact``)
    for such an answer to be used as it is (``server_reads.StalePolicy``).
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
    servers: tuple[ServerAddress, ...] = ()
    stale: bool = False
    max_stale: float | None = None

    def __post_init__(self) -> None:
        check_token(self.token, "token")  # a header must carry it (from_env names the source)
        if self.servers:
            _check_servers(self)
        if self.max_stale is not None and not self.max_stale >= 0:
            raise ConsulConfigError("max_stale", f"must be >= 0 seconds, not {self.max_stale!r}")
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
            if f.name == "servers":
                if value:
                    shown.append(f"servers=[{', '.join(str(s) for s in value)}]")
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
        CONSUL_HTTP_ADDR: one address, or several comma-separated) or ``addresses`` (a
        sequence of addresses, or one comma-separated string). A ``token_file`` (given
        or from the environment) is read now; an explicit ``token`` wins over any file.
        """
        env = os.environ if environ is None else environ
        ov = dict(overrides)
        unknown = set(ov) - {f.name for f in fields(cls)} - {"address", "addresses"}
        if unknown:
            raise TypeError(f"unknown ConsulConnection setting(s): {', '.join(sorted(unknown))}")

        ssl = env_flag(env, "CONSUL_HTTP_SSL", False)
        address = ov.pop("address", None)
        addresses = ov.pop("addresses", None)
        if address is not None and addresses is not None:
            raise TypeError("give address or addresses, not both")
        if addresses is not None:
            items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
            servers = read_addresses(items, ssl, "addresses")
        else:
            setting = "address" if address else "CONSUL_HTTP_ADDR"
            raw = address or env.get("CONSUL_HTTP_ADDR", "").strip() or DEFAULT_ADDRESS
            servers = read_addresses(raw, ssl, setting)
        if {"host", "port", "scheme"} & ov.keys():
            servers = servers[:1]  # an explicit host/port/scheme names one address
        first = servers[0]
        max_stale = env_duration(env, "CONSUL_DISCOVERY_MAX_STALE")

        values: dict[str, Any] = {
            "host": first.host,
            "port": first.port,
            "scheme": first.scheme,
            "servers": servers if len(servers) > 1 else (),
            "stale": env_flag(env, "CONSUL_DISCOVERY_STALE", False) or max_stale is not None,
            "max_stale": max_stale,
            "verify": env_flag(env, "CONSUL_HTTP_SSL_VERIFY", True),
            "ca_file": env_path(env, "CONSUL_CACERT", directory=False),
            "ca_path": env_path(env, "CONSUL_CAPATH", directory=True),
            "client_cert": env_path(env, "CONSUL_CLIENT_CERT", directory=False),
            "client_key": env_path(env, "CONSUL_CLIENT_KEY", directory=False),
            "tls_server_name": env.get("CONSUL_TLS_SERVER_NAME") or None,
        }
        chosen = _token_and_file(env, ov.pop("token", None), ov.pop("token_file", None))
        values["token"], values["token_file"] = chosen
        values.update(ov)
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
        overriding its own: how a client that takes all three decides where to go.
        A wrong type raises TypeError naming the argument (``_check_resolve_arguments``)."""
        _check_resolve_arguments(connection, address, token)
        if connection is None:
            return cls.from_env(address=address, token=token)
        if address is not None:
            servers = read_addresses(address, False, "address", default_scheme=connection.scheme)
            first = servers[0]
            connection = replace(
                connection,
                scheme=first.scheme,
                host=first.host,
                port=first.port,
                servers=servers if len(servers) > 1 else (),
            )
        if token is not None:
            connection = connection.with_token(token)
        return connection

    def with_token(self, token: str | None) -> ConsulConnection:
        """The same connection with another ACL token (None: the agent's default)."""
        return replace(self, token=token or None, token_file=None)

    # ---- what a client needs --------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` (an IPv6 literal bracketed), or every server's, comma-separated,
        when there are several (for messages); never carries the token."""
        if self.servers:
            return ",".join(server.address for server in self.servers)
        return host_port(self.host, self.port)

    @property
    def server_addresses(self) -> tuple[ServerAddress, ...]:
        """Every address to reach Consul at: ``servers``, or the one address."""
        return self.servers or (ServerAddress(self.scheme, self.host, self.port),)

    @property
    def routed(self) -> bool:
        """True when requests go through the server-list rules (several addresses, or
        stale reads asked for); False keeps today's plain single-address client."""
        return bool(self.servers) or self.stale

    def for_server(self, server: ServerAddress) -> ConsulConnection:
        """This connection to ``server`` alone (TLS, token and timeouts unchanged)."""
        return replace(self, scheme=server.scheme, host=server.host, port=server.port, servers=())

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` of the agent's HTTP API (the first, of several)."""
        return f"{self.scheme}://{host_port(self.host, self.port)}"

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

        The token is a default header of the session, so it is never part of a URL; a
        caller's ``?token=`` (py-consul's ``catalog.register`` adds one) is moved to the
        header before the URL is sent or logged (``url_token``). CA and client
        certificate files that cannot be loaded raise ``ConsulConfigError`` here, naming
        the setting, as ``ssl_context`` does (requests would load them only at the first
        request, and fail with OpenSSL's words).
        """
        if self.scheme == "https" and (self.ca_file or self.ca_path or self.client_cert):
            self.ssl_context()  # only to check the files
        session = requests.Session()
        session.trust_env = False  # the agent directly: no HTTP(S)_PROXY, no ~/.netrc
        session.verify = self.requests_verify()
        session.cert = self.requests_cert()
        session.headers.update(self.headers())
        adapter: TokenHeaderAdapter
        if self.scheme == "https" and self.tls_server_name and self.verify:
            adapter = _ServerNameAdapter(self.tls_server_name, pool_maxsize=pool_maxsize)
        else:
            adapter = TokenHeaderAdapter(pool_maxsize=pool_maxsize)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def py_consul(self, *, timeout: float | None = None) -> consul.Consul:
        """A py-consul client on this connection (its env lookups overridden).

        With several addresses it talks to the first one only: what it is for (the
        registrar's agent calls: register, check updates, maintenance) is an agent's
        own state, which does not move between servers (``registry/README.md``).
        """
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
        try:
            context = ssl.create_default_context(cafile=self.ca_file, capath=self.ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise ConsulConfigError(
                "CONSUL_CACERT/CONSUL_CAPATH",
                f"cannot load CA certificates from {self.ca_file or self.ca_path}: {_why(exc)}",
            ) from None
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert and self.client_key:
            try:
                context.load_cert_chain(self.client_cert, self.client_key)
            except (ssl.SSLError, OSError) as exc:
                raise ConsulConfigError(
                    "CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY",
                    f"cannot load the client certificate {self.client_cert} with the key "
                    f"{self.client_key} (PEM files, the key matching the certificate): "
                    f"{_why(exc)}",
                ) from None
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


def _why(exc: BaseException) -> str:
    """OpenSSL's or the OS's reason, without the C source location: "PEM lib" for
    "[SSL] PEM lib (_ssl.c:3926)"."""
    reason = getattr(exc, "strerror", None) or (exc.args[-1] if exc.args else None)
    return re.sub(r"^\[\w+\] | \(_ssl\.c:\d+\)$", "", str(reason or exc))


def _token_and_file(
    env: Mapping[str, str], token: str | None, token_file: str | None
) -> tuple[str | None, str | None]:
    """(token, token file): an explicit ``token`` ("" for none), else an explicit
    ``token_file``, else CONSUL_HTTP_TOKEN_FILE, else CONSUL_HTTP_TOKEN; each checked,
    an error naming where it came from."""
    if token is not None:
        return check_token(token, "token"), None
    if token_file is not None:
        return read_token(token_file, "token_file"), token_file
    env_file = env.get("CONSUL_HTTP_TOKEN_FILE") or None
    if env_file is not None:
        return read_token(env_file, "CONSUL_HTTP_TOKEN_FILE"), env_file
    return check_token(env.get("CONSUL_HTTP_TOKEN"), "CONSUL_HTTP_TOKEN"), None


class _ServerNameAdapter(TokenHeaderAdapter):
    """An HTTPAdapter that expects ``server_name`` in the certificate and sends it as SNI."""

    def __init__(self, server_name: str, **kwargs: Any) -> None:
        self.server_name = server_name
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Pools verify the certificate against ``server_name`` instead of the host."""
        kwargs["server_hostname"] = self.server_name
        kwargs["assert_hostname"] = self.server_name
        super().init_poolmanager(*args, **kwargs)


def _check_servers(connection: ConsulConnection) -> None:
    servers = connection.servers
    if len(servers) < 2:
        raise ConsulConfigError("addresses", "servers lists two or more (one: host and port)")
    if len(set(servers)) != len(servers):
        raise ConsulConfigError("addresses", "an address is listed twice")
    if len({s.scheme for s in servers}) > 1:
        raise ConsulConfigError("addresses", "mixes http and https addresses")
    first = ServerAddress(connection.scheme, connection.host, connection.port)
    if servers[0] != first:
        raise ConsulConfigError(
            "addresses", f"scheme, host and port ({first}) must be the first of servers"
        )


def _check_resolve_arguments(connection: Any, address: Any, token: Any) -> None:
    """TypeError naming ``connection``, ``address`` or ``token`` when one has a wrong
    type (else it would fail later, as an AttributeError naming neither)."""
    if connection is not None and not isinstance(connection, ConsulConnection):
        hint = " (an address string is the first argument)" if isinstance(connection, str) else ""
        raise TypeError(
            f"connection must be a ConsulConnection or None{hint}; "
            f"got {type(connection).__name__} {connection!r}"
        )
    if address is not None and not isinstance(address, str):
        raise TypeError(
            "the Consul address (first argument) must be a str ('host:port', "
            "'https://host:port', several comma-separated) or None; "
            f"got {type(address).__name__} {address!r}"
        )
    if token is not None and not isinstance(token, str):
        raise TypeError(f"token must be a str or None; got {type(token).__name__}")
