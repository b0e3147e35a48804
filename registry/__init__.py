"""registry: services register themselves with Consul and stay correctly registered.

Adopt it with a line or two::

    # Flask app factory
    from consul_discovery.registry.flask import ConsulRegistry
    registry = ConsulRegistry(app)              # GET /health, registers under app.run()
    registry.add_check("db", db.ping)

    # serve with gunicorn: registers once in the master, drains on SIGTERM
    gunicorn -c python:consul_discovery.registry.gunicorn_conf "services.user_service:create_app()"

Settings (environment; keyword overrides of ``Registration.from_env`` win):

SERVICE_NAME                      required; the service's name in Consul, one DNS label
SERVICE_ID                        instance id; default ``<name>-<hostname>-<port>``
SERVICE_ADDRESS                   advertised address (an IP address or host name only);
                                  default the bound address, else the local IP
                                  towards the agent (never 0.0.0.0)
SERVICE_PORT                      advertised port (1-65535); default the bound port;
                                  must be a port the server listens on
SERVICE_PORT_FORWARDED            ``true``: SERVICE_PORT is forwarded there (NAT); no check
SERVICE_TAGS                      comma list: ``a,b``
SERVICE_META                      ``k=v,k=v``, as Consul takes it (``registry.meta``)
SERVICE_VERSION                   goes to meta ``version``
SERVICE_WEIGHT_PASSING / _WARNING weights (default 1 / 1)
SERVICE_CHECK                     ``http`` (default), ``tcp`` or ``ttl``
SERVICE_HEALTH_PATH               default ``/health``; starts with ``/``
SERVICE_CHECK_INTERVAL            default ``10s`` (TTL mode: the TTL); 1s to 24h
SERVICE_CHECK_TIMEOUT             default Consul's (10s, capped by interval)
SERVICE_CHECK_ID                  default ``service:<id>``
SERVICE_DEREGISTER_AFTER          default ``1m`` (Consul's minimum); at most 720h
SERVICE_SUCCESS_BEFORE_PASSING    flap damping, default 0
SERVICE_FAILURES_BEFORE_CRITICAL  flap damping, default 0
SERVICE_DRAIN_SECONDS             propagation delay on SIGTERM, default 5; at most 1h
CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN(_FILE), CONSUL_HTTP_SSL(_VERIFY), CONSUL_CACERT,
CONSUL_CAPATH, CONSUL_CLIENT_CERT/_KEY, CONSUL_TLS_SERVER_NAME
                                  how to reach the agent, with the consul CLI's meaning
                                  (``consul_connection.ConsulConnection``)

Durations accept ``10s``, ``1m30s``, ``500ms`` or a bare number of seconds (finite). The Flask,
gunicorn and ASGI adapters share one lifecycle (``consul_discovery.registry.lifecycle``):
a bad setting stops startup under each of them with ``registry: bad configuration: ...``.
"""

from consul_discovery.registry.checks import CheckSpec, HttpCheck, TcpCheck, TtlCheck
from consul_discovery.registry.config import ConsulSettings, Locality, Registration, Weights
from consul_discovery.registry.errors import (
    ConsulRejected,
    ConsulUnavailable,
    InstanceUnknown,
    RegistryConfigError,
    RegistryError,
)
from consul_discovery.registry.health import HealthChecks, HealthReport
from consul_discovery.registry.registrar import Registrar, State

__all__ = [
    "CheckSpec",
    "ConsulRejected",
    "ConsulSettings",
    "ConsulUnavailable",
    "HealthChecks",
    "HealthReport",
    "HttpCheck",
    "InstanceUnknown",
    "Locality",
    "Registrar",
    "Registration",
    "RegistryConfigError",
    "RegistryError",
    "State",
    "TcpCheck",
    "TtlCheck",
    "Weights",
]
