"""Debian's Chromium driven by Playwright, for page tests. Never downloads a browser."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
# Flags for a closed network: without the background-networking ones Chromium keeps
# trying to reach Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium; fails (does not skip) when Debian's chromium is missing."""
    assert Path(CHROMIUM).exists(), "chromium is not installed: `make peers` installs it"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot_path(name: str) -> Path:
    """Where a test keeps a screenshot as an artefact (test-artifacts/screenshots/)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"


def log_in(page: Page, server: str, username: str, password: str, *, next_path: str = "/portal/") -> None:
    """Log in through the portal's login form, as a person does, and wait for the page asked for."""
    page.goto(f"{server}{next_path}")
    page.wait_for_url("**/portal/login**")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form#login button[type=submit]")
    page.wait_for_url(f"{server}{next_path}")
