"""Consul's own web UI, driven in Debian's headless Chromium through chromedriver."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The flags this machine needs: no sandbox as root, and no background networking (the
# network is closed; Chromium's own connections would only fail).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class BrowserMissing(RuntimeError):
    """Chromium or chromedriver is not installed; the message says how to install them."""


@contextmanager
def chromium(extra_flags: tuple[str, ...] = ()) -> Iterator[WebDriver]:
    """A headless Chromium session with a fresh profile, quit (by chromedriver) afterwards.

    ``extra_flags`` go on Chromium's command line too (e.g. a certificate setting).
    """
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            raise BrowserMissing(
                f"{path} not found: install Debian's packages with "
                "`apt-get install chromium chromium-driver` (.ci/run does)"
            )
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        raise BrowserMissing(f"could not start headless Chromium: {exc}") from exc
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def services_health(driver: WebDriver) -> dict[str, str]:
    """Health class ('passing', 'warning', 'critical') of each row of the UI's services list."""
    health = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "li.linkable"):
        links = row.find_elements(By.CSS_SELECTOR, ".header a")
        badges = row.find_elements(By.CSS_SELECTOR, ".header dl")
        if links and badges:
            health[links[0].text.strip()] = (badges[0].get_attribute("class") or "").strip()
    return health


def log_in(driver: WebDriver, ui_url: str, secret_id: str, accessor_id: str) -> None:
    """Log the UI in with an ACL token, as its Log in form would (the token in localStorage)."""
    driver.get(ui_url)
    value = json.dumps({"SecretID": secret_id, "AccessorID": accessor_id})
    driver.execute_script("window.localStorage.setItem('consul:token', arguments[0]);", value)


def wait_for_services_health(
    driver: WebDriver, ui_url: str, expected: dict[str, str], timeout: float = 30.0
) -> dict[str, str]:
    """Open the services list and wait until each named service shows the expected health.

    The UI refreshes itself with blocking queries, so the page is loaded once and watched.
    """
    driver.get(f"{ui_url.rstrip('/')}/dc1/services")
    seen: dict[str, str] = {}

    def matches(drv: WebDriver) -> bool:
        nonlocal seen
        seen = services_health(drv)
        return all(seen.get(name) == want for name, want in expected.items())

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(matches)
    except TimeoutException as exc:
        raise AssertionError(f"UI shows {seen}, expected {expected}") from exc
    return seen


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save a PNG of the current page in test-artifacts/ and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
