"""Helpers of the technician's page tests: a cached technician, and a logged-in client."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from playwright.sync_api import Page

from relay.edge.technicians import TechnicianCache

PASSWORD = "correct-horse-1"


def cached_technician(root: Path, username: str = "tech.li", display_name: str = "李技师", *,
                      password: str = PASSWORD, active: bool = True) -> TechnicianCache:
    """A technician cache in ``root`` holding one login, as if fetched from the county."""
    cache = TechnicianCache(root)
    cache.replace([{"username": username, "display_name": display_name, "active": active,
                    "password_hash": PasswordHasher().hash(password) if active else ""}], etag='"test"')
    return cache


def form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no form with a CSRF token on the page"
    return match.group(1)


def log_in(client: httpx.Client, username: str = "tech.li", password: str = PASSWORD) -> httpx.Response:
    """Log ``client`` in through the login form (its CSRF cookie and field)."""
    token = form_token(client.get("/login").text)
    return client.post("/login", data={"csrf": token, "username": username, "password": password, "lang": "zh"})


@contextlib.contextmanager
def logged_in(base: str, username: str = "tech.li", password: str = PASSWORD) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as client:
        answer = log_in(client, username, password)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/?"), answer.text
        yield client


def log_in_browser(page: Page, base: str, username: str = "tech.li", password: str = PASSWORD) -> None:
    """Log in through the page's login form in a real browser, as a technician does."""
    page.goto(f"{base}/")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="登录").click()
    assert page.url.rstrip("/").startswith(base) and "/login" not in page.url, page.url
