"""An immutable snapshot of settings, typed access, a declared schema, and what changed.

A ``Settings`` is never modified: the client builds a new one per update and swaps a
single reference, so a reader holding one sees either the whole old or the whole new
configuration. Values from individual KV keys are strings; values from documents are
YAML-typed; ``coerce`` turns either into the asked type or raises ``ConfigValueError``
naming the key.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from consul_discovery.config.errors import ConfigValueError, MissingSettingError

T = TypeVar("T")
_MISSING: Any = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce(key: str, value: Any, kind: type[T]) -> T:
    """``value`` as ``kind`` (str, int, float, bool, tuple, or any callable type)."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value  # type: ignore[return-value]
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE  # type: ignore[return-value]
            raise ValueError("not a boolean (true/false)")
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("not an integer")
            return int(str(value).strip() if isinstance(value, str) else value)  # type: ignore[return-value]
        if kind is float:
            if isinstance(value, bool):
                raise ValueError("not a number")
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("not a finite number")
            return number  # type: ignore[return-value]
        if kind is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError(f"not a string ({type(value).__name__})")
            return str(value)  # type: ignore[return-value]
        if kind is tuple:
            if isinstance(value, tuple):
                return value  # type: ignore[return-value]
            text = str(value).strip()
            return tuple(p.strip() for p in text.split(",") if p.strip())  # type: ignore[return-value]
        return kind(value)  # type: ignore[call-arg]
    except (TypeError, ValueError) as exc:
        raise ConfigValueError(key, f"{value!r} is not a valid {kind.__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Setting:
    """One declared setting: its key, type, default and an optional validator.

    ``validate`` returns nothing and raises ``ValueError`` (its message is shown, the
    key prepended) for a value the service must not run with.
    """

    key: str
    kind: type = str
    default: Any = _MISSING
    validate: Callable[[Any], None] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        """Refuse a declaration that cannot work: a key that is not a non-empty str, a
        ``kind`` that is not a type (``"int"``), a ``validate`` that is not callable, or a
        default the setting itself would refuse (ConfigValueError naming the key; a
        default of None is taken as it is: the setting reads None when not configured)."""
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"a setting's key must be a non-empty str; got {self.key!r}")
        if not isinstance(self.kind, type):
            raise TypeError(
                f"{self.key}: kind must be a type such as int, float, bool, str or tuple; "
                f"got {type(self.kind).__name__} {self.kind!r}"
            )
        if self.validate is not None and not callable(self.validate):
            raise TypeError(f"{self.key}: validate must be callable; got {self.validate!r}")
        if self.default is not _MISSING and self.default is not None:  # None: reads as None
            try:
                self.parse(self.default)
            except ConfigValueError as exc:
                raise ConfigValueError(self.key, f"its default {exc.problem}") from exc

    def parse(self, value: Any) -> Any:
        """The value coerced and validated, or ``ConfigValueError`` naming the key."""
        typed = coerce(self.key, value, self.kind)
        if self.validate is not None:
            try:
                self.validate(typed)
            except ValueError as exc:
                raise ConfigValueError(self.key, f"{typed!r} rejected: {exc}") from exc
        return typed


def between(low: float | None = None, high: float | None = None) -> Callable[[Any], None]:
    """A validator: ``low <= value <= high`` (either bound optional)."""

    def check(value: Any) -> None:
        if low is not None and value < low:
            raise ValueError(f"must be >= {low}")
        if high is not None and value > high:
            raise ValueError(f"must be <= {high}")

    return check


@dataclass(frozen=True)
class Schema:
    """Declared settings; ``apply`` types a raw flat mapping or raises on the first bad one."""

    settings: tuple[Setting, ...] = ()

    def __init__(self, *settings: Setting) -> None:
        keys = [s.key for s in settings]
        if len(keys) != len(set(keys)):
            raise ValueError(f"a setting is declared twice in {keys}")
        object.__setattr__(self, "settings", tuple(settings))

    def apply(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Raw values with every declared setting present parsed (undeclared ones kept)."""
        typed = dict(raw)
        for setting in self.settings:
            if setting.key in raw:
                typed[setting.key] = setting.parse(raw[setting.key])
        return typed

    def declares(self, key: str) -> bool:
        """True when ``key`` is one of the declared settings."""
        return any(s.key == key for s in self.settings)

    def defaults(self) -> dict[str, Any]:
        """Each declared setting's default (those that have one)."""
        return {s.key: s.default for s in self.settings if s.default is not _MISSING}


@dataclass(frozen=True)
class Settings(Mapping[str, Any]):
    """One immutable configuration: the merged, typed settings and the index they came from."""

    values: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0
    schema: Schema = field(default_factory=Schema)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", types.MappingProxyType(dict(self.values)))

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def get(self, key: str, kind: None = None, default: Any = _MISSING) -> Any: ...
    @overload
    def get(self, key: str, kind: type[T], default: Any = _MISSING) -> T: ...

    def get(self, key: str, kind: type | None = None, default: Any = _MISSING) -> Any:  # type: ignore[override]
        """The setting ``key`` (as ``kind`` when given), else its declared default, else
        ``default``; with no value and no default at all (an undeclared key included),
        ``MissingSettingError``, a KeyError naming the key (a bad value raises
        ``ConfigValueError`` naming the key)."""
        if key in self.values:
            value = self.values[key]
            return value if kind is None else coerce(key, value, kind)
        if default is not _MISSING:
            return default
        declared = self.schema.defaults()
        if key in declared:
            return declared[key]
        raise MissingSettingError(key, declared=self.schema.declares(key))

    def section(self, prefix: str) -> dict[str, Any]:
        """The settings under ``prefix.`` with that prefix stripped."""
        start = prefix.rstrip(".") + "."
        return {k[len(start) :]: v for k, v in self.values.items() if k.startswith(start)}


@dataclass(frozen=True, slots=True)
class Change:
    """One setting that changed: its old and new value (``ABSENT`` when added/removed)."""

    key: str
    old: Any
    new: Any

    @property
    def added(self) -> bool:
        """True if the setting did not exist before."""
        return self.old is _ABSENT

    @property
    def removed(self) -> bool:
        """True if the setting no longer exists."""
        return self.new is _ABSENT


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()
ABSENT = _ABSENT  # the old/new value of an added/removed setting


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[Change, ...]:
    """Every key whose value differs between ``old`` and ``new``, sorted by key."""
    keys = sorted(set(old) | set(new))
    return tuple(
        Change(k, old.get(k, _ABSENT), new.get(k, _ABSENT))
        for k in keys
        if old.get(k, _ABSENT) != new.get(k, _ABSENT)
    )
