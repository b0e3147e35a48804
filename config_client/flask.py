"""Flask extension: the app's settings from Consul KV, kept current while it serves.

``ConsulConfig(app, client, bind={"orders.max_list_limit": "MAX_LIST_LIMIT"})`` starts
the client (in each gunicorn worker: apps are built after the fork) and:

- ``app.config["CONSUL_SETTINGS"]`` is the current ``Settings`` snapshot, replaced whole
  on each update (read it once per request for a consistent view of several settings);
- each ``bind`` entry mirrors one setting into a plain ``app.config`` key (for code that
  already reads ``current_app.config``); a setting deleted from KV restores the value
  the app had before, so a delete refreshes the app like any other change.

App config: ``CONFIG_FAIL_FAST`` (default False: serve the app's defaults while Consul
is unreachable), ``CONFIG_START_TIMEOUT`` (seconds to wait for the first read, 5).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from consul_discovery.extras import missing

try:
    from flask import Flask, current_app
except ImportError as exc:
    raise missing(__name__, "flask", exc) from exc

from consul_discovery.config.client import ConfigClient, Update
from consul_discovery.config.settings import ABSENT, Settings

NAMESPACE = "CONSUL_SETTINGS"
EXTENSION = "consul_config"


class ConsulConfig:
    """Keeps ``app.config`` current from a ``ConfigClient`` (see the module docstring)."""

    def __init__(
        self,
        app: Flask | None = None,
        client: ConfigClient | None = None,
        *,
        bind: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.bind = dict(bind or {})
        if app is not None:
            self.init_app(app, client)

    def init_app(self, app: Flask, client: ConfigClient | None = None) -> None:
        """Start the client, mirror the first configuration, subscribe to updates."""
        client = client or self.client
        if client is None:
            raise ValueError("ConsulConfig needs a ConfigClient")
        self.client = client
        originals = {name: app.config.get(name, ABSENT) for name in self.bind.values()}
        app.extensions[EXTENSION] = self

        declared = client.schema.defaults()
        lock = threading.Lock()

        def mirror() -> None:
            # Always the client's current snapshot, under a lock: two threads mirroring
            # at once (start and the applier) cannot leave an older one in place.
            with lock:
                settings = client.settings
                for key, name in self.bind.items():
                    value = settings.values.get(key, declared.get(key, originals[name]))
                    self._set(app, name, value)
                app.config[NAMESPACE] = settings

        def on_update(update: Update) -> None:
            mirror()

        client.subscribe(on_update)
        client.start(
            fail_fast=bool(app.config.get("CONFIG_FAIL_FAST", False)),
            timeout=float(app.config.get("CONFIG_START_TIMEOUT", 5.0)),
        )
        mirror()

    @staticmethod
    def _set(app: Flask, name: str, value: Any) -> None:
        if value is ABSENT:
            app.config.pop(name, None)
        else:
            app.config[name] = value


def current_settings(app: Flask | None = None) -> Settings:
    """The current settings snapshot of ``app`` (default: the current app)."""
    target: Any = app or current_app
    return target.config[NAMESPACE]
