"""The production-like runtime the scenarios run against, started and stopped by the harness.

* a dedicated PostgreSQL database, dropped, created and migrated at every run (clean figures);
* a dedicated Redis database, flushed (broker, channel layer and cache of the processes below);
* granian serving HTTP through ``config.wsgi`` (or daphne, ``--http-server daphne``), a daphne
  for the websockets, a Celery worker (``--pool=threads``, concurrency 32) and the loopback
  OpenAI-compatible server of :mod:`tests.fake_model` (the tests' own), all on 127.0.0.1.

The web and worker processes run with ``REPLAYBENCH_MODE=production`` (DEBUG off, pooled
connections), minus the HTTPS redirect that a proxy would terminate, and with the per-caller
throttle raised: the bench measures the server, not the throttle.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
WORKER_CONCURRENCY = 32
GRANIAN_THREADS = 8
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def admin_url(database_url: str) -> tuple[str, str]:
    """The URL of the server's maintenance database and the name of the bench database."""
    parsed = urlparse(database_url)
    name = parsed.path.lstrip("/")
    if not name:
        raise SystemExit(f"The bench database URL names no database: {database_url}")
    return urlunparse(parsed._replace(path="/postgres")), name


def recreate_database(database_url: str) -> None:
    maintenance, name = admin_url(database_url)
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def flush_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


def base_environment(*, database_url: str, redis_url: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environment


def migrate(*, database_url: str, redis_url: str, log_directory: Path) -> None:
    log = log_directory / "migrate.log"
    with log.open("w") as output:
        completed = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=base_environment(database_url=database_url, redis_url=redis_url),
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=600,
        )
    if completed.returncode:
        raise SystemExit(f"migrate failed (exit {completed.returncode}); see {log}")


@dataclass
class Runtime:
    database_url: str
    redis_url: str
    log_directory: Path
    web_port: int = 0
    ws_port: int = 0
    openai_port: int = 0
    worker_processes: int = 1
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def openai_base_url(self) -> str:
        return f"http://{HOST}:{self.openai_port}/v1"

    def production_environment(self, *, pool_max: int) -> dict[str, str]:
        environment = base_environment(database_url=self.database_url, redis_url=self.redis_url)
        environment.update(
            {
                "REPLAYBENCH_MODE": "production",
                "SECRET_KEY": secrets.token_urlsafe(48),
                "ALLOWED_HOSTS": f"{HOST},localhost",
                "SECURE_SSL_REDIRECT": "false",
                "API_THROTTLE_RATE": "100000000/min",
                "DATABASE_POOL_MAX": str(pool_max),
                "LOG_LEVEL": "WARNING",
                # The concurrency scenario has 256 replays at once against one target.
                "TARGET_MAX_CONCURRENCY": "256",
                "REPLAYBENCH_DATA_DIR": str(self.log_directory.parent / "data"),
            }
        )
        return environment

    def _spawn(self, name: str, command: list[str], environment: dict[str, str]) -> None:
        log = (self.log_directory / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )

    def start_openai(self, *, delay_ms: float, name: str = "openai") -> int:
        """A loopback model server answering every call after ``delay_ms``; its port."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_model", "--port", "0", "--delay-ms", str(delay_ms)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        self.processes[name] = process
        assert process.stdout is not None
        line = process.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "listening":
            raise SystemExit(f"the fake model server did not start: {line}")
        if name == "openai":
            self.openai_port = int(line[1])
        return int(line[1])

    def start_local_model(self, *, slots: int, context_tokens: int, threads: int = 1) -> int:
        """``manage.py serve_local_model`` on a free port, health-checked; its port."""
        from tests_app import local_model

        port = free_port()
        self._spawn(
            "local-model",
            [
                sys.executable,
                "manage.py",
                "serve_local_model",
                f"--port={port}",
                f"--threads={threads}",
                f"--slots={slots}",
                f"--context={context_tokens}",
            ],
            {
                **base_environment(database_url=self.database_url, redis_url=self.redis_url),
                "LOCAL_MODEL": "on",
            },
        )
        process = self.processes["local-model"]
        if not local_model.wait_until_healthy(
            port, timeout_s=120, still_starting=lambda: process.poll() is None
        ):
            raise SystemExit("the local model did not pass its health check; see its log")
        return port

    def start_web(self, *, processes: int, http_server: str) -> None:
        """Serve the app: ``processes`` web processes answer HTTP.

        ``daphne``: that many daphne processes accept on one listening socket (the kernel spreads
        the connections) and answer HTTP and websockets. ``granian``: granian serves HTTP through
        ``config.wsgi`` with that many worker processes (each with threads), and one daphne
        process serves the websockets on a port of its own, as behind a proxy routing ``/ws/``.
        """
        if http_server == "granian":
            self.web_port = free_port()
            granian = str(Path(sys.executable).parent / "granian")
            self._spawn(
                "web",
                [
                    granian,
                    "--interface",
                    "wsgi",
                    "--host",
                    HOST,
                    "--port",
                    str(self.web_port),
                    "--workers",
                    str(processes),
                    "--blocking-threads",
                    str(GRANIAN_THREADS),
                    "--backlog",
                    "1024",
                    "--no-ws",
                    "--log-level",
                    "warning",
                    "config.wsgi:application",
                ],
                self.production_environment(pool_max=GRANIAN_THREADS + 2),
            )
            self._wait_for_http("web", self.web_port)
            self.ws_port = self._start_daphne(["ws"])
        else:
            self.web_port = self.ws_port = self._start_daphne(
                ["web" if index == 0 else f"web{index + 1}" for index in range(processes)]
            )

    def _start_daphne(self, names: list[str]) -> int:
        """One daphne process per name, all accepting on one new listening socket; its port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(1024)
        listener.set_inheritable(True)
        port = int(listener.getsockname()[1])
        daphne = str(Path(sys.executable).parent / "daphne")
        for name in names:
            log = (self.log_directory / f"{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(
                [daphne, "--fd", str(listener.fileno()), "config.asgi:application"],
                cwd=ROOT,
                env=self.production_environment(pool_max=20),
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
            )
        # The children hold the socket now; this process must not accept on it.
        listener.close()
        self._wait_for_http(names[0], port)
        return port

    def _wait_for_http(self, name: str, port: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                urllib.request.urlopen(f"http://{HOST}:{port}/api/", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer means the server is up
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"{name} did not answer HTTP within 60 s; see its log")

    def start_worker(
        self, *, processes: int = 1, concurrency: int = WORKER_CONCURRENCY, pool_max: int = 0
    ) -> None:
        """Celery workers with ``concurrency`` threads in all, split over ``processes``
        processes (each has its own interpreter lock, so more processes use more cores), each
        with a pool of ``pool_max`` database connections (default: its threads and a few)."""
        threads = concurrency // processes
        names = ["worker" if index == 0 else f"worker{index + 1}" for index in range(processes)]
        started = {name: self.ready_count(name) for name in names}
        for name in names:
            self.start_one_worker(name, threads=threads, pool_max=pool_max or threads + 8)
        for name in names:
            self.wait_ready(name, ready_lines=started[name] + 1)

    def start_one_worker(self, name: str, *, threads: int, pool_max: int) -> None:
        """One Celery worker process; its log is appended to, so a restarted worker keeps its
        earlier lines. A replay holds a connection only while it writes, not while the model
        answers, so the pool may be smaller than the threads."""
        self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=threads",
                f"--concurrency={threads}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"bench-{os.getpid()}-{name}@%h",
            ],
            self.production_environment(pool_max=pool_max),
        )

    def ready_count(self, name: str) -> int:
        """How many times the worker's log says it was ready (once per start)."""
        log = self.log_directory / f"{name}.log"
        return log.read_bytes().count(b" ready.") if log.exists() else 0

    def wait_ready(self, name: str, *, ready_lines: int) -> None:
        """Until the worker's log says ``ready`` ``ready_lines`` times."""
        log = self.log_directory / f"{name}.log"
        deadline = time.monotonic() + 90
        while self.ready_count(name) < ready_lines:
            self._check_alive(name)
            if time.monotonic() >= deadline:
                raise SystemExit(f"the Celery worker was not ready within 90 s; see {log}")
            time.sleep(0.2)

    def start_beat(self) -> None:
        """Celery beat: the periodic sweep and analytics refresh, as production runs them."""
        self._spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "--loglevel=INFO",
                "--schedule",
                str(self.log_directory / "beat-schedule"),
            ],
            self.production_environment(pool_max=2),
        )

    def stop_workers(self) -> None:
        """Stop the Celery workers (warm shutdown: they finish what they hold)."""
        for name in [name for name in self.processes if name.startswith("worker")]:
            process = self.processes.pop(name)
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def _check_alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            raise SystemExit(
                f"the {name} process exited with {process.returncode}; "
                f"see {self.log_directory / (name + '.log')}"
            )

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.processes.clear()


@contextmanager
def running(
    *,
    database_url: str,
    redis_url: str,
    log_directory: Path,
    openai_delay_ms: float,
    web_processes: int = 2,
    http_server: str = "granian",
    worker_processes: int = 1,
) -> Iterator[Runtime]:
    runtime = Runtime(database_url=database_url, redis_url=redis_url, log_directory=log_directory)
    try:
        runtime.start_openai(delay_ms=openai_delay_ms)
        runtime.start_web(processes=web_processes, http_server=http_server)
        runtime.worker_processes = worker_processes
        runtime.start_worker(processes=worker_processes)
        yield runtime
    finally:
        runtime.stop()
