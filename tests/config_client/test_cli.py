"""``python -m consul_discovery.config`` against a real agent: push (CAS), diff, get, watch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consul_discovery.config.cli import main
from consul_discovery.config.files import Plan
from tests.config_client.conftest import KV, service_name
from tests.harness.agent import ConsulAgent
from tests.harness.binary import REPO_ROOT


def run(agent: ConsulAgent, *argv: str, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--consul", agent.address, *argv], out, **kw)
    return code, out.getvalue()


def layer_dir(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def test_push_diff_get_round_trip(kv_agent: ConsulAgent, kv: KV, tmp_path: Path) -> None:
    name = service_name()
    directory = layer_dir(tmp_path, name, "orders:\n  max_items: 5\n  enabled: true\n")
    assert run(kv_agent, "diff", str(directory))[0] == 1
    code, out = run(kv_agent, "push", str(directory))
    assert code == 0 and "pushed 2 write(s)" in out
    assert kv.get(f"config/{name}/orders/max_items") == "5"
    assert kv.get(f"config/{name}/orders/enabled") == "true"
    assert run(kv_agent, "diff", str(directory)) == (0, "")
    layer_dir(tmp_path, name, "orders:\n  max_items: 7\n  enabled: true\n")
    code, out = run(kv_agent, "diff", str(directory))
    assert code == 1 and f"~ config/{name}/orders/max_items: '5' -> '7'" in out
    code, out = run(kv_agent, "get", "--service", name, "orders.max_items")
    assert (code, out.strip()) == (0, "5")
    code, out = run(kv_agent, "push", "--document", str(directory))
    assert code == 0 and kv.get(f"config/{name}/data") is not None


def test_push_reports_a_cas_conflict_and_overwrites_nothing(
    kv_agent: ConsulAgent, kv: KV, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = service_name()
    kv.put(f"config/{name}/limit", "1")
    directory = layer_dir(tmp_path, name, "limit: 2\nnew: x\n")

    def concurrent_edit(plan: Plan) -> None:
        assert len(plan.writes) == 2
        kv.put(f"config/{name}/limit", "9")  # someone else, between our read and write

    code, _ = run(kv_agent, "push", str(directory), before_write=concurrent_edit)
    assert code == 1
    assert f"conflict on config/{name}/limit" in capsys.readouterr().err
    assert kv.get(f"config/{name}/limit") == "9"  # their edit stands
    assert kv.get(f"config/{name}/new") is None  # and nothing of ours was written


def test_watch_prints_changes(kv_agent: ConsulAgent, kv: KV) -> None:
    name = service_name()
    kv.put(f"config/{name}/flag", "off")

    def later() -> None:
        time.sleep(0.5)
        kv.put(f"config/{name}/flag", "on")

    writer = threading.Thread(target=later)
    writer.start()
    code, out = run(kv_agent, "watch", "--service", name, "--count", "1", "--timeout", "10")
    writer.join()
    assert code == 0 and "flag: 'off' -> 'on'" in out


def test_bad_files_and_unreachable_consul_are_clear_errors(
    kv_agent: ConsulAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layer_dir(tmp_path, "broken", "a: [1\n")
    assert run(kv_agent, "push", str(tmp_path))[0] == 2
    assert "broken.yaml: not valid YAML" in capsys.readouterr().err
    out = io.StringIO()
    assert main(["--consul", "127.0.0.1:1", "get", "--service", "x"], out) == 2
    assert "unreachable" in capsys.readouterr().err


def test_put_writes_a_setting_where_get_reads_it(kv_agent: ConsulAgent, kv: KV) -> None:
    name = service_name()
    code, out = run(kv_agent, "put", "--service", name, "retry.budget", "0.3")
    assert (code, out.strip()) == (0, f"put config/{name}/retry/budget")
    code, out = run(kv_agent, "put", "--service", name, "--profile", "prod", "retry.budget", "0.5")
    assert (code, out.strip()) == (0, f"put config/{name},prod/retry/budget")
    assert run(kv_agent, "get", "--service", name, "retry.budget") == (0, "0.3\n")
    got = run(kv_agent, "get", "--service", name, "--profile", "prod", "retry.budget")
    assert got == (0, "0.5\n")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["put", "outside/the/layers", "v"], "--raw-key"),  # the old raw-path form
        (["put", "config/x/limit", "v"], "--raw-key"),
        (["put", "--service", "{name}", "a/path", "v"], "is not a setting name"),
        (["put", "--service", "{name}", "a..b", "v"], "is not a setting name"),
        (["put", "--service", "{name}", "data", "v"], "document key"),
        (["put", "--raw-key", "--service", "{name}", "k", "v"], "--raw-key takes a KV path"),
        (["put", "--service", "bad/name", "limit", "v"], "not a valid service name"),
        (["put", "--service", "bad name!", "limit", "v"], "not a valid service name"),
        (["put", "--service", "{name}", "--profile", "", "limit", "v"], "'' is not a valid"),
        (["put", "--raw-key", "/", "v"], "--raw-key needs a KV path"),
    ],
)
def test_put_refuses_what_is_not_a_setting_of_a_service(
    kv_agent: ConsulAgent, kv: KV, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    name = service_name()
    before = kv.get("outside/the/layers"), kv.get("config/x/limit")
    code, out = run(kv_agent, *(a.format(name=name) for a in argv))
    assert code == 2 and out == ""
    assert says in capsys.readouterr().err
    assert (kv.get("outside/the/layers"), kv.get("config/x/limit")) == before == (None, None)
    assert kv.get(f"config/{name}/a/path") is None and kv.get(f"config/{name}/data") is None
    assert kv.get(f"config/{name}/limit") is None  # --profile '' is not the service's layer


@pytest.mark.parametrize("layer", ["bad name", "orders,", "orders,a,b", ",prod"])
def test_push_refuses_a_file_no_service_reads(
    kv_agent: ConsulAgent, kv: KV, tmp_path: Path, capsys: pytest.CaptureFixture[str], layer: str
) -> None:
    layer_dir(tmp_path, layer, "limit: 1\n")
    assert run(kv_agent, "push", str(tmp_path)) == (2, "")
    assert "a layer file must be named <service>[,<profile>].yaml" in capsys.readouterr().err
    assert kv.get(f"config/{layer}/limit") is None


def test_put_raw_key_writes_anywhere_when_asked(kv_agent: ConsulAgent, kv: KV) -> None:
    key = f"elsewhere/{service_name()}"
    assert run(kv_agent, "put", "--raw-key", key, "v") == (0, f"put {key}\n")
    assert kv.get(key) == "v"


def test_get_of_a_service_nothing_configures_fails_and_says_so(
    kv_agent: ConsulAgent, kv: KV, capsys: pytest.CaptureFixture[str]
) -> None:
    name = service_name()
    assert run(kv_agent, "get", "--service", name) == (2, "")
    err = capsys.readouterr().err
    assert f"error: no configuration for {name}: none of config/application/, config/{name}/" in err
    kv.put("config/application/log/level", "info")
    try:  # the shared layer gives every service settings: a valid answer, with a note
        code, out = run(kv_agent, "get", "--service", name)
        assert (code, json.loads(out)) == (0, {"log.level": "info"})
        assert f"note: {name} has no layer of its own (config/{name}/)" in capsys.readouterr().err
    finally:
        kv.delete("config/application", recurse=True)


def test_usage_names_the_console_script_or_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: consul-config ")
    done = subprocess.run(
        [sys.executable, "-m", "consul_discovery.config", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m consul_discovery.config ")


def test_push_without_prune_says_which_keys_it_keeps(
    kv_agent: ConsulAgent, kv: KV, tmp_path: Path
) -> None:
    """A '- key (only in Consul)' line under push read as a delete it never made."""
    name = service_name()
    kv.put(f"config/{name}/old", "1")
    directory = layer_dir(tmp_path, name, "limit: 2\n")
    code, out = run(kv_agent, "push", str(directory))
    assert code == 0
    assert f"- config/{name}/old (only in Consul: '1') kept: --prune deletes it" in out
    assert kv.get(f"config/{name}/old") == "1"
    code, out = run(kv_agent, "push", "--prune", str(directory))
    assert code == 0 and "kept" not in out and kv.get(f"config/{name}/old") is None
