"""Pure rules: layers, documents, typed access, schema validation, diffs, debounce."""

from __future__ import annotations

import pytest

from consul_discovery.config import (
    ABSENT,
    ConfigClient,
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
from consul_discovery.connection import names


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


@pytest.mark.parametrize("name", ["bad name!", "", "a,b", "x/y", "-orders", "a" * 64, "ördersß"])
def test_a_service_name_follows_the_registrys_service_name_rule(name: str) -> None:
    with pytest.raises(ConfigValueError, match=r"not a valid service name: .*one DNS label"):
        Layers(name)
    with pytest.raises(ConfigValueError, match="not a valid service name"):
        ConfigClient(name)  # refused before anything reaches Consul


def test_the_config_client_and_the_registry_share_one_service_name_rule() -> None:
    from consul_discovery.registry import dns

    assert dns.dns_label_problem is names.dns_label_problem
    assert Layers("order-service-2").service == "order-service-2"
    with pytest.raises(ConfigValueError, match="'prod/eu' is not a valid profile name"):
        Layers("orders", ("prod/eu",))


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


def test_a_setting_with_no_value_and_no_default_raises_declared_or_not() -> None:
    schema = Schema(Setting("name", str), Setting("optional", int, None))
    settings = Settings({"there": "x"}, 0, schema)
    with pytest.raises(MissingSettingError, match="'nope' is not configured and not declared"):
        settings.get("nope")
    with pytest.raises(KeyError):
        settings.get("nope", int)
    with pytest.raises(MissingSettingError, match="'name' is not configured and has no default"):
        settings.get("name")
    assert settings.get("nope", default=None) is None and settings.get("there") == "x"
    assert settings.get("optional") is None  # a declared default of None
    assert Settings({}, 0).get("nope", str, "dflt") == "dflt"


@pytest.mark.parametrize(
    ("declare", "error", "says"),
    [
        (lambda: Setting("a.b", float, 5.0, validate=between(0.0, 1.0)), ConfigValueError,
         r"^a\.b: its default 5\.0 rejected: must be <= 1\.0"),
        (lambda: Setting("a.b", int, "many"), ConfigValueError,
         r"^a\.b: its default 'many' is not a valid int"),
        (lambda: Setting("a.b", "int", 1), TypeError,
         r"a\.b: kind must be a type .* got str 'int'"),
        (lambda: Setting("a.b", int, 1, validate="positive"), TypeError,
         r"a\.b: validate must be callable"),
        (lambda: Setting("", int, 1), TypeError, "key must be a non-empty str"),
    ],
)  # fmt: skip
def test_a_setting_that_cannot_work_is_refused_when_declared(declare, error, says) -> None:
    with pytest.raises(error, match=says):
        declare()


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
