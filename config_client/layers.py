"""Where settings live in KV and how KV entries become flat settings.

Layers, least specific first (a later layer's key wins)::

    config/application/            every service
    config/application,<profile>/  every service, one profile
    config/<service>/              one service
    config/<service>,<profile>/    one service, one profile

Inside a layer, ``config/<service>/retry/budget`` is the setting ``retry.budget`` (its
value a string), and the key ``data`` holds one YAML or JSON document whose nested
mappings flatten the same way (``retry: {budget: 0.2}`` is ``retry.budget``: 0.2). When
both spell one setting, the individual key wins. JSON documents need nothing more; YAML
ones need PyYAML (``pip install 'consul-discovery[yaml]'``). Keys ending in ``/`` are folders (the
Consul UI makes them) and carry nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consul_discovery.config.errors import ConfigValueError
from consul_discovery.connection.names import service_name_problem
from consul_discovery.extras import install_command

DEFAULT_ROOT = "config"
DOCUMENT_KEY = "data"

Flat = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Layers:
    """The KV prefixes one service reads, least specific first."""

    service: str
    profiles: tuple[str, ...] = ()
    root: str = DEFAULT_ROOT
    shared: str = "application"

    def __post_init__(self) -> None:
        for name in (self.service, self.shared):
            check_service_name(name)
        for name in self.profiles:
            if not isinstance(name, str) or not name or "/" in name or "," in name:
                raise ConfigValueError("layers", f"{name!r} is not a valid profile name")

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Each layer's KV prefix, ending in ``/``, least specific first."""
        names = [self.shared, *(f"{self.shared},{p}" for p in self.profiles)]
        names += [self.service, *(f"{self.service},{p}" for p in self.profiles)]
        return tuple(f"{self.root.strip('/')}/{name}/" for name in names)

    @property
    def own_prefixes(self) -> tuple[str, ...]:
        """The prefixes of the service's own layers (not the shared ones)."""
        return self.prefixes[1 + len(self.profiles) :]


def check_service_name(name: str) -> str:
    """``name`` if it can be a service's name in Consul (the registry's rule for
    SERVICE_NAME, ``consul_discovery.connection.names``); else ConfigValueError."""
    problem = service_name_problem(name) if isinstance(name, str) else f"{name!r} is not a str"
    if problem is not None:
        raise ConfigValueError("layers", f"not a valid service name: {problem}")
    return name


def parse_document(key: str, text: str) -> dict[str, Any]:
    """A YAML or JSON document (JSON is YAML) flattened; a bad one names ``key``.

    Without PyYAML only JSON is read, and a document that is not JSON says so.
    """
    if not text.strip():
        return {}
    try:
        import yaml  # the 'yaml' extra; imported here so the core does not need it
    except ImportError:
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ConfigValueError(
                key, f"not valid JSON ({exc}); YAML needs PyYAML: {install_command('yaml')}"
            ) from exc
    else:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigValueError(key, f"not valid YAML/JSON: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigValueError(key, f"a document must be a mapping, not {type(loaded).__name__}")
    return flatten(loaded, where=key)


def flatten(tree: Mapping[Any, Any], where: str = "", prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists become tuples (values stay immutable)."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        if not isinstance(name, str | int) or isinstance(name, bool) or not str(name):
            raise ConfigValueError(where or "document", f"key {name!r} is not a name")
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, where, f"{dotted}."))
        else:
            flat[dotted] = _frozen(value)
    return flat


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    return value


def layer_settings(prefix: str, entries: Mapping[str, str | None]) -> dict[str, Any]:
    """One layer's settings from its KV entries (full key -> decoded value or None)."""
    document: dict[str, Any] = {}
    single: dict[str, Any] = {}
    for key, value in entries.items():
        if not key.startswith(prefix) or key.endswith("/") or value is None:
            continue
        rest = key[len(prefix) :]
        if rest == DOCUMENT_KEY:
            document = parse_document(key, value)
        else:
            single[".".join(rest.split("/"))] = value
    return {**document, **single}


def merge(layers: Iterable[Flat]) -> dict[str, Any]:
    """Layers merged, least specific first: a later layer's key wins."""
    merged: dict[str, Any] = {}
    for flat in layers:
        merged.update(flat)
    return merged


def to_json_text(flat: Flat) -> str:
    """Settings as sorted JSON (for the CLI)."""
    return json.dumps(dict(sorted(flat.items())), indent=2, default=list)
