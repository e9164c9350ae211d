"""A daphne process for the browser tests: the embedded runtime against the test database.

Unlike the integration server (Celery on Redis), this one runs background work on its own thread
pool and uses the in-memory channel layer, so a replay started from the page runs inside the
daphne process and its events reach the page's websocket without any other process.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

from tests.conftest import require_service
from tests.integration.daphne import DaphneServer, serve_daphne

# The name of the environment variable that holds the fake target's key (never a real secret).
FAKE_KEY_ENV = "BROWSER_TEST_TARGET_KEY"
_NOT_INHERITED = {"REDIS_URL", "JUDGE_MODEL", "DJANGO_ALLOW_ASYNC_UNSAFE", "BACKGROUND_BACKEND"}


def database_url_for_other_processes() -> str:
    """The URL of the database pytest-django created (``test_<name>``), for the server process."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        require_service("the browser tests' daphne process needs PostgreSQL (set DATABASE_URL)")
    credentials = quote(str(database.get("USER") or ""), safe="")
    if database.get("PASSWORD"):
        credentials += ":" + quote(str(database["PASSWORD"]), safe="")
    host = database.get("HOST") or "127.0.0.1"
    port = database.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{database['NAME']}"


def run_embedded_daphne() -> Iterator[DaphneServer]:
    data_dir = tempfile.mkdtemp(prefix="replaybench-browser-")
    inherited = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}

    def environment_for(server: DaphneServer) -> dict[str, str]:
        return {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url_for_other_processes(),
            "DATABASE_POOL": "false",
            "BACKGROUND_BACKEND": "thread",
            "REPLAYBENCH_DATA_DIR": data_dir,
            "MEDIA_ROOT": str(Path(data_dir) / "media"),
            "CSRF_TRUSTED_ORIGINS": server.http_url,
            FAKE_KEY_ENV: "sk-browser-test-placeholder",
            "PYTHONUNBUFFERED": "1",
        }

    with serve_daphne(environment_for, ready_path="/accounts/login/") as server:
        yield server


def wait_for_sessions_to_close(timeout_s: float = 10) -> None:
    """PostgreSQL notices a dead client's sessions a moment later; dropping the test database
    before that fails, so wait until only this process is connected."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.1)
