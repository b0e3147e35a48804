"""config_client: a service's live configuration from Consul KV.

Layered sources (``config/application/``, ``config/application,<profile>/``,
``config/<service>/``, ``config/<service>,<profile>/``; most specific wins), each as
individual keys or one YAML/JSON ``data`` document; typed access with defaults and a
declared ``Schema``; one blocking-query watch per layer on the discovery client's watch
rules; debounced, validated updates swapped in as one immutable ``Settings``; a Flask
extension (``consul_discovery.config.flask``), an ASGI lifespan
(``consul_discovery.config.asgi``) and an
operator CLI (``python -m consul_discovery.config``). Consul is reached through
``consul_connection.ConsulConnection`` only.
"""

from consul_discovery.config.client import ConfigClient, Debounce, Update
from consul_discovery.config.errors import (
    CasConflictError,
    ConfigError,
    ConfigValueError,
    ConsulKVError,
    KVAccessDenied,
    MissingSettingError,
)
from consul_discovery.config.layers import Layers
from consul_discovery.config.settings import ABSENT, Change, Schema, Setting, Settings, between

__all__ = [
    "ABSENT",
    "CasConflictError",
    "Change",
    "ConfigClient",
    "ConfigError",
    "ConfigValueError",
    "ConsulKVError",
    "Debounce",
    "KVAccessDenied",
    "Layers",
    "MissingSettingError",
    "Schema",
    "Setting",
    "Settings",
    "Update",
    "between",
]
