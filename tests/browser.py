"""A real headless Chromium for the tests that load a page in a browser: Debian's `chromium`
and `chromium-driver` (`apt-get install chromium chromium-driver`; `.ci/run` installs them),
driven by Selenium with the driver's path given, so nothing is downloaded.

Without them the browser tests fail in CI (`CI` set: a missing browser must not pass
silently) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

__all__ = ["headless_chromium", "script_errors", "wait_for"]

MISSING = (
    "the browser tests need Debian's chromium and chromium-driver on PATH "
    "(apt-get install -y --no-install-recommends chromium chromium-driver; .ci/run installs them)"
)


@contextmanager
def headless_chromium() -> Iterator[WebDriver]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    options = Options()
    options.binary_location = binary
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for script_errors
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield browser
    finally:
        browser.quit()


def wait_for(browser: WebDriver, condition: Any, message: str, seconds: float = 60) -> Any:
    """`condition(browser)`'s first truthy value; fails with `message` and the page's status
    line and script errors after `seconds`."""
    try:
        return WebDriverWait(browser, seconds, poll_frequency=0.05).until(condition)
    except Exception as error:
        status = browser.execute_script("const s = document.getElementById('status'); return s && s.textContent;")
        raise AssertionError(f"{message} (status line: {status!r}; script errors: {script_errors(browser)})") from error


def script_errors(browser: WebDriver) -> list[str]:
    """The page's uncaught script errors since the last call (failed requests a page
    handles itself, such as a 401 it explains, are not errors)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry.get("source") == "javascript"]
