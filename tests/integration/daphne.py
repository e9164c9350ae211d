"""Real server processes (daphne for ASGI, granian for WSGI) against the test database and Redis.

Import the fixture into a test module (``from tests.integration.daphne import
daphne_server_fixture``); tests then ask for ``daphne_server``.
The server is shared by the session; its rows come from ``transactional_db`` tests, whose data is
committed and therefore visible to the other process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import database_url, redis_url

REPOSITORY = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30


@dataclass(frozen=True)
class DaphneServer:
    host: str
    port: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.host}:{self.port}/{path.lstrip('/')}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback URL built here)
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except OSError:
        return False


@contextlib.contextmanager
def serve_daphne(
    environment_for: Callable[[DaphneServer], dict[str, str]], *, ready_path: str = "/"
) -> Iterator[DaphneServer]:
    """Run ``daphne config.asgi:application`` on a free loopback port until the block ends.

    ``environment_for`` builds the process's whole environment (it may need the server's URL);
    a process that exits or does not answer in time fails the test with the end of its log.
    """

    def command(server: DaphneServer) -> list[str]:
        return [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            server.host,
            "-p",
            str(server.port),
            "config.asgi:application",
        ]

    with serve_process("daphne", command, environment_for, ready_path=ready_path) as server:
        yield server


@contextlib.contextmanager
def serve_granian(
    environment_for: Callable[[DaphneServer], dict[str, str]], *, workers: int = 2
) -> Iterator[DaphneServer]:
    """Run granian on ``config.wsgi:application`` (the production HTTP server) with ``workers``
    processes, until the block ends."""

    def command(server: DaphneServer) -> list[str]:
        return [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "wsgi",
            "--host",
            server.host,
            "--port",
            str(server.port),
            "--workers",
            str(workers),
            "--blocking-threads",
            "4",
            "config.wsgi:application",
        ]

    with serve_process("granian", command, environment_for, ready_path="/api/") as server:
        yield server


@contextlib.contextmanager
def serve_process(
    name: str,
    command_for: Callable[[DaphneServer], list[str]],
    environment_for: Callable[[DaphneServer], dict[str, str]],
    *,
    ready_path: str,
) -> Iterator[DaphneServer]:
    server = DaphneServer(host="127.0.0.1", port=free_port())
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        command_for(server),
        cwd=REPOSITORY,
        env=environment_for(server),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(f"{server.http_url}{ready_path}"):
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{_tail(log.name)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not answer in {START_TIMEOUT_S}s:\n{_tail(log.name)}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        os.unlink(log.name)


def production_environment() -> dict[str, str]:
    """What the session's servers run with: Celery on Redis for background work, channels-redis."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url(),
        "DATABASE_POOL": "false",
        "REDIS_URL": redis_url(),
        "BACKGROUND_BACKEND": "celery",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session", name="daphne_server")
def daphne_server_fixture(django_db_setup: Any) -> Iterator[DaphneServer]:
    """The production-like server: Celery on Redis for background work, channels-redis."""
    environment = production_environment()
    with serve_daphne(lambda _server: environment) as server:
        yield server


def post_api(
    server: DaphneServer, key: str, action: str, body: dict[str, Any], *, timeout: float = 30
) -> tuple[int, Any]:
    """POST a Test API call with an API key; the status and the decoded body, errors included."""
    request = urllib.request.Request(  # noqa: S310 (a loopback URL built by the fixture)
        f"{server.http_url}/api/v5/artifacts/test/{action}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Api-Key": key},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _tail(path: str, lines: int = 40) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])
