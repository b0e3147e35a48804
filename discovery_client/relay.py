"""Workers share their master's watches: one watch per target for a whole gunicorn app.

Under gunicorn every worker is a process of its own, and each would watch every service
it calls: 4 workers watching 10 services hold 40 long polls. With the registry's hooks
(``consul_discovery.registry.gunicorn_conf``), the master runs a relay
(``start_master_relay``, from ``when_ready``, before any worker is forked): its own
``ConsulSource`` watches each target once, whichever workers ask, and pushes every new
Resolution to each of them over a Unix socket (``relay_server``); the socket's path is
advertised to the workers in ``CONSUL_DISCOVERY_RELAY``. A worker's ``ConsulSource``
(the one a ``ServiceClient`` makes) sees it and asks the relay instead of Consul
(``relay_client``); its ``cached``, ``watch_stats``, listeners, stale marks and
self-preservation are the master's watch's, so they behave as with direct watches.
If the relay goes away (the master died or was replaced), each worker says so once and
watches by itself from its last relayed answer on.

With the HTTP/2 transport (a TLS agent, the ``http2`` extra) a whole application then
holds **one** connection to its agent for all its watches, whatever its worker count.

**One application = one ACL token.** The relay serves the master's token's view only: a
worker whose source uses another token (or another agent) is refused by the relay and
watches with its own, as before. The socket is 0600 in a 0700 directory: only the
application's own user can connect. ``DISCOVERY_SHARED_WATCHES=false`` turns the relay
off. A source made with ``relay=False``, an injected ``send``/``asend``/``session``, or
a non-default ``consistency`` never uses it; neither does an ``AsyncConsulSource`` (an
ASGI worker's), which still watches by itself over its loop's shared transport.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import MutableMapping

from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.relay_protocol import RELAY_ENV, SHARED_WATCHES_ENV
from consul_discovery.client.relay_server import RelayServer
from consul_discovery.connection import ConsulConfigError, ConsulConnection
from consul_discovery.connection.env_values import env_flag

log = logging.getLogger(__name__)


def shared_watches_enabled(environ: MutableMapping[str, str] | None = None) -> bool:
    """False when ``DISCOVERY_SHARED_WATCHES`` turns the relay off; a value that is not a
    boolean raises ConsulConfigError naming it (read as the CONSUL_* booleans are)."""
    env = os.environ if environ is None else environ
    return env_flag(env, SHARED_WATCHES_ENV, True)


def start_master_relay(
    environ: MutableMapping[str, str] | None = None, *, directory: str | None = None
) -> RelayServer | None:
    """In a gunicorn master: serve its watches to its workers and advertise the relay in
    ``environ`` (default ``os.environ``, which the workers inherit); None when turned
    off or Consul's settings are invalid (the workers then say why themselves)."""
    env = os.environ if environ is None else environ
    try:
        if not shared_watches_enabled(env):
            env.pop(RELAY_ENV, None)
            return None
        connection = ConsulConnection.from_env(env)
    except ConsulConfigError as exc:
        env.pop(RELAY_ENV, None)
        log.warning("discovery relay not started: %s", exc)
        return None
    source = ConsulSource(connection=connection, relay=False, after_fork="close")
    server = RelayServer(source, directory=directory).start()
    env[RELAY_ENV] = str(server.path)
    atexit.register(server.close)
    log.debug("discovery relay at %s (agent %s)", server.path, connection.base_url)
    return server


__all__ = ["RELAY_ENV", "SHARED_WATCHES_ENV", "RelayServer", "start_master_relay"]
