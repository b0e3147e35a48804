"""Pushed settings appear in the Consul UI's Key/Value view (headless Chromium, screenshot)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from consul_discovery.config.cli import main
from tests.harness.agent import ConsulAgent
from tests.harness.browser import chromium, screenshot

pytestmark = pytest.mark.browser


def test_settings_show_in_the_ui_key_value_view(kv_agent: ConsulAgent, tmp_path: Path) -> None:
    (tmp_path / "order-service.yaml").write_text(
        "orders:\n  max_items: 20\n  max_list_limit: 200\n"
    )
    assert main(["--consul", kv_agent.address, "push", str(tmp_path)]) == 0
    with chromium() as browser:
        browser.get(f"{kv_agent.url}/ui/dc1/kv/config/order-service/orders/")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            source = browser.page_source
            if "max_items" in source and "max_list_limit" in source:
                break
            time.sleep(0.3)
        assert "max_items" in browser.page_source and "max_list_limit" in browser.page_source
        shot = screenshot(browser, "consul-ui-kv-order-service-config")
        assert shot.stat().st_size > 10_000
