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


# Reports every Content-Security-Policy violation of every document of the context to the test.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"} on ${location.pathname}`
  );
});
"""


@pytest.fixture
def csp_violations() -> list[str]:
    """The CSP violations reported while the test ran; the page fixture fails on any."""
    return []


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch, csp_violations: list[str]) -> Iterator[Any]:
    """A fresh chromium profile and one page in it, on which no CSP violation may happen."""
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

        def report(text: str) -> None:
            csp_violations.append(text)

        context.expose_function("reportCspViolation", report)
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda message: (
                    csp_violations.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            yield page
            assert csp_violations == [], "the Content-Security-Policy blocked something"
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
