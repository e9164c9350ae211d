"""Fixtures of the browser tests: an embedded daphne and Debian's chromium driven by Playwright."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from tests.browser.server import run_embedded_daphne, wait_for_sessions_to_close
from tests.conftest import require_service
from tests.integration.daphne import DaphneServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def browser_server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[DaphneServer]:
    yield from run_embedded_daphne()
    with django_db_blocker.unblock():
        wait_for_sessions_to_close()


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh chromium profile and one page in it."""
    if not Path(CHROMIUM).exists():
        require_service(f"chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # still plain synchronous code, so Django's async-context guard does not apply to them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    profile = tempfile.mkdtemp(prefix="replaybench-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            accept_downloads=True,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(20_000)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            # The test body's ORM calls ran beside Playwright's event loop, on a connection of
            # their own (asgiref locals are per context); close it, or the database cannot be
            # dropped at the end of the session.
            connections.close_all()
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
