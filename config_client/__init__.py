"""config_client: a service's live configuration from Consul KV.

Layered sources (``config/application/``, ``config/application,<profile>/``,
``config/<service>/``, ``config/<service>,<profile>/``; most specific wins), each as
individual keys or one YAML/JSON ``data`` document; typed access with defaults and a
declared ``Schema``; one blocking-query watch per layer on the discovery client's watch
rules; debounced, validated updates swapped in as one immutable ``Settings``; a Flask
extension (``config_client.flask``), an ASGI lifespan (``config_client.asgi``) and an
operator CLI (``python -m config_client``). Consul is reached through
``consul_connection.ConsulConnection`` only.
"""

from config_client.client import ConfigClient, Debounce, Update
from config_client.errors import (
    CasConflictError,
    ConfigError,
    ConfigValueError,
    ConsulKVError,
    KVAccessDenied,
    MissingSettingError,
)
from config_client.layers import Layers
from config_client.settings import ABSENT, Change, Schema, Setting, Settings, between

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
