"""Local configuration files and the KV writes that make Consul match them.

A directory holds one file per layer, named after it: ``application.yaml``,
``order-service.yaml``, ``order-service,prod.json`` (``.yaml``, ``.yml`` or ``.json``).
``push`` writes each file either as individual keys (default: ``retry: {budget: 0.2}``
becomes ``config/<layer>/retry/budget`` = ``0.2``) or, with ``document=True``, whole
into ``config/<layer>/data``. Every write is a check-and-set against the ModifyIndex
read just before (0 for a new key), so a concurrent edit is never overwritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consul_discovery.config.errors import ConfigValueError
from consul_discovery.config.kv import KVStore, Write
from consul_discovery.config.layers import DEFAULT_ROOT, DOCUMENT_KEY, Layers, parse_document

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class LayerFile:
    """One local file: its layer name, its KV prefix and its text."""

    layer: str
    prefix: str
    path: Path
    text: str


def layer_files(directory: Path, root: str = DEFAULT_ROOT) -> list[LayerFile]:
    """Every layer file in ``directory``, sorted by name; an empty directory is an error."""
    if not directory.is_dir():
        raise ConfigValueError(str(directory), "is not a directory")
    found = []
    for path in sorted(directory.iterdir()):
        if path.suffix in SUFFIXES and path.is_file():
            layer = path.stem
            check_layer_name(path, layer)
            prefix = f"{root.strip('/')}/{layer}/"
            found.append(LayerFile(layer, prefix, path, path.read_text(encoding="utf-8")))
    if not found:
        raise ConfigValueError(str(directory), f"has no {'/'.join(SUFFIXES)} files")
    return found


def check_layer_name(path: Path, layer: str) -> None:
    """Refuse a file whose name no service reads: ``<service>[,<profile>]`` as ``Layers``
    spells it (ConfigValueError naming the file)."""
    service, comma, profile = layer.partition(",")
    try:
        Layers(service, (profile,) if comma else ())
    except ConfigValueError as exc:
        raise ConfigValueError(
            str(path), f"a layer file must be named <service>[,<profile>].yaml: {exc.problem}"
        ) from exc


def kv_text(value: Any) -> str:
    """How one setting is written into its own KV key (scalars plainly, lists as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return str(value)


def desired(file: LayerFile, *, document: bool) -> dict[str, str]:
    """Full KV key -> text that the file asks for (a bad file names itself)."""
    flat = parse_document(str(file.path), file.text)
    if document:
        return {f"{file.prefix}{DOCUMENT_KEY}": file.text}
    return {f"{file.prefix}{'/'.join(key.split('.'))}": kv_text(v) for key, v in flat.items()}


@dataclass(frozen=True, slots=True)
class Difference:
    """One key where KV and the files disagree (``kv``/``local`` None: absent there)."""

    key: str
    kv: str | None
    local: str | None

    def line(self) -> str:
        """``+ key = local``, ``- key`` (only in KV) or ``~ key: 'kv' -> 'local'``."""
        if self.kv is None:
            return f"+ {self.key} = {self.local!r}"
        if self.local is None:
            return f"- {self.key} (only in Consul: {self.kv!r})"
        return f"~ {self.key}: {self.kv!r} -> {self.local!r}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``push`` would do: the differences and the check-and-set writes for them."""

    differences: tuple[Difference, ...]
    writes: tuple[Write, ...]


def plan(store: KVStore, files: list[LayerFile], *, document: bool, prune: bool) -> Plan:
    """Compare ``files`` with KV now; the writes carry the ModifyIndex just read."""
    differences: list[Difference] = []
    writes: list[Write] = []
    for file in files:
        want = desired(file, document=document)
        have = {e.key: e for e in store.list(file.prefix).entries if not e.key.endswith("/")}
        for key in sorted(set(want) | set(have)):
            entry = have.get(key)
            current = entry.value if entry else None
            if entry is not None and current is None:
                current = ""
            local = want.get(key)
            if current == local:
                continue
            differences.append(Difference(key, None if entry is None else current, local))
            if local is not None:
                writes.append(Write(key, local, entry.modify_index if entry else 0))
            elif prune and entry is not None:
                writes.append(Write(key, None, entry.modify_index))
    return Plan(tuple(differences), tuple(writes))
