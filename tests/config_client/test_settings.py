"""Pure rules: layers, documents, typed access, schema validation, diffs, debounce."""

from __future__ import annotations

import pytest

from consul_discovery.config import (
    ABSENT,
    ConfigValueError,
    Layers,
    MissingSettingError,
    Schema,
    Setting,
    Settings,
    between,
)
from consul_discovery.config.client import Debounce
from consul_discovery.config.layers import layer_settings, merge
from consul_discovery.config.settings import coerce, diff


def test_layer_prefixes_most_specific_last() -> None:
    assert Layers("orders", ("prod", "eu")).prefixes == (
        "config/application/",
        "config/application,prod/",
        "config/application,eu/",
        "config/orders/",
        "config/orders,prod/",
        "config/orders,eu/",
    )
    with pytest.raises(ConfigValueError, match="layers"):
        Layers("a/b")


def test_key_value_and_document_layers_flatten_and_merge() -> None:
    prefix = "config/orders/"
    entries = {
        "config/orders/": None,  # a folder the UI made
        "config/orders/retry/budget": "0.5",
        "config/orders/data": "retry:\n  budget: 0.1\n  attempts: 3\nflags: [a, b]\n",
    }
    layer = layer_settings(prefix, entries)
    assert layer == {"retry.budget": "0.5", "retry.attempts": 3, "flags": ("a", "b")}
    merged = merge([{"retry.budget": "0.2", "log.level": "info"}, layer])
    assert merged["retry.budget"] == "0.5" and merged["log.level"] == "info"
    assert layer_settings(prefix, {"config/orders/data": '{"a": {"b": 1}}'}) == {"a.b": 1}


def test_malformed_document_names_its_key() -> None:
    with pytest.raises(ConfigValueError, match=r"config/orders/data.*YAML"):
        layer_settings("config/orders/", {"config/orders/data": "a: [1, 2"})
    with pytest.raises(ConfigValueError, match=r"config/orders/data.*mapping"):
        layer_settings("config/orders/", {"config/orders/data": "- 1\n- 2"})


@pytest.mark.parametrize(
    ("value", "kind", "want"),
    [
        ("0.2", float, 0.2),
        (" 7 ", int, 7),
        ("TRUE", bool, True),
        ("off", bool, False),
        (3, float, 3.0),
        ("a, b", tuple, ("a", "b")),
        (5, str, "5"),
    ],
)
def test_coerce(value: object, kind: type, want: object) -> None:
    assert coerce("k", value, kind) == want


@pytest.mark.parametrize(
    ("value", "kind"),
    [("abc", int), ("1.5", int), (1.5, int), ("maybe", bool), ("nan", float), (True, int)],
)
def test_coerce_rejects_with_the_key(value: object, kind: type) -> None:
    with pytest.raises(ConfigValueError, match=r"^retry\.budget: "):
        coerce("retry.budget", value, kind)


def test_typed_access_defaults_and_schema() -> None:
    schema = Schema(Setting("retry.budget", float, 0.2, between(0, 1)), Setting("name", str))
    settings = Settings(schema.apply({"retry.budget": "0.5", "extra": "x"}), 7, schema)
    assert settings.get("retry.budget") == 0.5
    assert settings.get("retry.budget", float, default=0.9) == 0.5
    assert settings.get("missing", int, default=3) == 3
    assert Settings({}, 0, schema).get("retry.budget") == 0.2  # the declared default
    with pytest.raises(MissingSettingError, match="name"):
        Settings({}, 0, schema).get("name", str)
    with pytest.raises(ConfigValueError, match=r"retry\.budget.*must be <= 1"):
        schema.apply({"retry.budget": "1.5"})
    assert settings.section("retry") == {"budget": 0.5}
    with pytest.raises(TypeError):
        settings.values["x"] = 1  # type: ignore[index]


def test_diff_reports_old_and_new_of_every_changed_key() -> None:
    changes = diff({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4})
    assert [(c.key, c.old, c.new) for c in changes] == [
        ("b", 2, 5),
        ("c", 3, ABSENT),
        ("d", ABSENT, 4),
    ]
    assert changes[1].removed and changes[2].added


def test_debounce_waits_for_quiet_but_never_past_max_wait() -> None:
    debounce = Debounce(quiet=0.05, max_wait=0.2)
    assert debounce.remaining(first=10.0, last=10.0, now=10.0) == pytest.approx(0.05)
    assert debounce.remaining(first=10.0, last=10.1, now=10.12) == pytest.approx(0.03)
    assert debounce.remaining(first=10.0, last=10.19, now=10.19) == pytest.approx(0.01)
    assert debounce.remaining(first=10.0, last=10.3, now=10.3) == 0.0
    with pytest.raises(ValueError):
        Debounce(quiet=1.0, max_wait=0.5)
