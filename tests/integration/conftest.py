"""Real processes for the integration suite: a Celery worker on Redis and the test database.

Tests here use ``transactional_db`` (the worker is another process: it sees only committed rows)
and are marked ``integration``, so tests/conftest.py keeps the real Celery/Redis runtime.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings

from tests.conftest import require_service

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT_S = 45


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 20, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"Timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(interval)


def database_url() -> str:
    """The URL of pytest-django's test database, for processes started by the test."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        require_service("integration tests need PostgreSQL (set DATABASE_URL)")
    user = quote(database.get("USER") or "postgres")
    password = database.get("PASSWORD") or ""
    credentials = f"{user}:{quote(password)}" if password else user
    host = database.get("HOST") or "127.0.0.1"
    port = database.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{database['NAME']}"


def redis_url() -> str:
    if not settings.REDIS_URL:
        require_service("integration tests need Redis (set REDIS_URL)")
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as error:
        require_service(f"Redis at REDIS_URL is not reachable: {error}")
    return str(settings.REDIS_URL)


class WorkerProcess:
    """A ``celery -A config worker --pool=threads`` subprocess; its output goes to a log file."""

    def __init__(self, *, env: dict[str, str], log_path: Path, concurrency: int = 4) -> None:
        self.log_path = log_path
        self.name = f"replay-it-{uuid.uuid4().hex[:8]}@%h"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=threads",
                f"--concurrency={concurrency}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "-n",
                self.name,
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group, so kill() reaches every process it may have started.
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while " ready." not in self.log():
            if self.process.poll() is not None:
                pytest.fail(f"The Celery worker exited at start:\n{self.log()[-4000:]}")
            if time.monotonic() >= deadline:
                self.kill()
                pytest.fail(f"The Celery worker was not ready in time:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task, as on an OOM kill or a lost machine."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture
def celery_worker_factory(
    transactional_db: Any, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers with extra environment (e.g. JUDGE_MODEL); all stop at teardown."""
    url = database_url()
    broker = redis_url()
    from config.celery import app

    # Messages left by an earlier run would only be ignored by the services; drop them anyway.
    app.control.purge()
    workers: list[WorkerProcess] = []

    def start(**extra_env: str) -> WorkerProcess:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": url,
            "DATABASE_POOL": "false",
            "REDIS_URL": broker,
            "BACKGROUND_BACKEND": "celery",
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        worker = WorkerProcess(env=env, log_path=tmp_path / f"worker-{len(workers) + 1}.log")
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def celery_worker(celery_worker_factory: Callable[..., WorkerProcess]) -> WorkerProcess:
    return celery_worker_factory()
