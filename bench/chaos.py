"""``make chaos``: the production runtime under the faults of the reliability issue, in one table.

It starts the runtime as the deployment guide runs it (granian for HTTP, daphne for websockets,
two Celery worker processes on threads, beat, PostgreSQL and Redis) on a PostgreSQL database of
its own and a Redis server of its own on a spare port, plus the loopback model server. Agents
loop next -> run -> wait -> end over a test of 200 runs while the scenario

* kills a worker with SIGKILL ten times (and starts it again, as a supervisor would),
* restarts Redis empty once (down for ten seconds),
* terminates the app's PostgreSQL connections three times,
* and holds an idle websocket on the test throughout.

Then it waits for the test to finish (at most a few minutes after the last fault) and prints:
runs, completed, failed at the attempt limit (every attempt died with its worker), failed
otherwise (a passing fault must fail none), lost (run answered, replay never started), executed
twice (model calls made again for the same invocation and turn, counted at the model server),
stuck (runs not finished at the end), steps duplicated, websocket closes, and per worker the
tasks it received after the last fault.

Nothing here is a timed assertion: the figures are counts, read with their targets.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import runtime
from bench.client import ApiClient, ApiError
from bench.scenarios.replay import model_server
from tests.redis_server import RedisServer

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/replaybench_chaos"
RUNS = 200
TURNS = 3
AGENTS = 6
MODEL_DELAY_MS = 200
WORKER_KILLS = 10
CONNECTION_TERMINATIONS = 3
REDIS_DOWN_S = 10
# How long the test may take to finish after the last fault before its open runs count as stuck:
# a killed worker's replay is given back after the heartbeat timeout and a sweep, and may be
# killed again.
SETTLE_S = 300
TABLE_ROWS = (
    ("runs", "runs", None),
    ("completed", "completed", None),
    ("failed at the attempt limit", "failed_at_limit", None),
    ("failed otherwise", "failed_otherwise", 0),
    ("lost", "lost", 0),
    ("executed twice", "executed_twice", 0),
    ("stuck", "stuck", 0),
    ("steps duplicated", "steps_duplicated", 0),
    ("websocket closes", "websocket_closes", 0),
)


# The scenario's own connections: it polls the database to know when to move on, and what it
# measures is the app's connections, which are the ones terminated.
HARNESS = "chaos-harness"


def harness_connection(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, application_name=HARNESS)


@dataclass
class Chaos:
    runtime: runtime.Runtime
    redis: RedisServer
    dsn: str
    api_key: str
    test_id: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    websocket_closes: int = 0
    run_failures: list[str] = field(default_factory=list)
    last_fault_at: datetime | None = None
    faults: list[str] = field(default_factory=list)

    def client(self) -> ApiClient:
        return ApiClient(host=runtime.HOST, port=self.runtime.web_port, api_key=self.api_key)

    def fault(self, what: str) -> None:
        self.last_fault_at = datetime.now(UTC)
        self.faults.append(f"{self.last_fault_at:%H:%M:%S} {what}")
        print(f"  fault: {what}", flush=True)


def seed(chaos: Chaos, model_port: int) -> str:
    """A benchmark of RUNS conversations x TURNS turns and a started test; its id."""
    from bench.seed import make_benchmark, make_world

    world = make_world(departments=2, evals_per_department=1)
    chaos.api_key = world.operator_key
    benchmark = make_benchmark(
        department_id=world.department_ids[1],
        name="Chaos benchmark",
        entries=RUNS,
        turns=TURNS,
        target={
            "kind": "openai",
            "model": "chaos-echo",
            "base_url": f"http://{runtime.HOST}:{model_port}/v1",
            "timeout_s": 30,
        },
    )
    client = chaos.client()
    answer = client.call("start", {"benchmark_id": str(benchmark.pk)})
    client.close()
    return str(answer["test_id"])


def invocation_status(connection: psycopg.Connection[Any], invocation_id: str) -> str:
    row = connection.execute(
        "SELECT status FROM tests_app_testinvocation WHERE id = %s", (invocation_id,)
    ).fetchone()
    return str(row[0]) if row else "missing"


def test_status(connection: psycopg.Connection[Any], test_id: str) -> str:
    row = connection.execute(
        "SELECT status FROM tests_app_test WHERE id = %s", (test_id,)
    ).fetchone()
    return str(row[0]) if row else "missing"


def call(chaos: Chaos, client: ApiClient, action: str, body: dict[str, Any]) -> Any:
    """An API call that waits out outages (503) and lost connections, as a careful agent does."""
    while not chaos.stop.is_set():
        try:
            return client.call(action, body)
        except ApiError as error:
            if error.status != 503:
                raise
        except (OSError, json.JSONDecodeError):
            client.close()  # a connection the outage broke, or an answer it cut short
        time.sleep(1)
    raise ApiError(0, {"detail": "the scenario stopped"}, action)


def agent(chaos: Chaos, index: int) -> None:
    client = chaos.client()
    with harness_connection(chaos.dsn) as connection:
        while not chaos.stop.is_set():
            try:
                claim = call(chaos, client, "next", {"test_id": chaos.test_id})
            except ApiError as error:
                if error.status != 409:
                    chaos.run_failures.append(f"agent {index} next: {error.status}")
                    time.sleep(1)
                    continue
                if test_status(connection, chaos.test_id) in ("completed", "stopped"):
                    break
                time.sleep(2)  # runs in flight; a lost one comes back to pending
                continue
            ids = {
                "test_id": chaos.test_id,
                "test_invocation_id": claim["invocation_id"],
                "run_id": claim["run_id"],
            }
            try:
                call(chaos, client, "run", ids)
            except ApiError as error:
                chaos.run_failures.append(f"agent {index} run: {error.status}")
                continue
            while not chaos.stop.is_set():
                status = invocation_status(connection, claim["invocation_id"])
                if status in ("replayed", "failed", "stopped"):
                    break
                time.sleep(0.2)
            if status == "replayed":
                try:
                    call(chaos, client, "end", {**ids, "score": 1.0, "feedback": "chaos"})
                except ApiError as error:
                    chaos.run_failures.append(f"agent {index} end: {error.status}")
    client.close()


def idle_websocket(chaos: Chaos) -> None:
    """Holds a socket on the test that no event needs to wake; counts how often it closed."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = f"ws://{runtime.HOST}:{chaos.runtime.ws_port}/ws/tests/{chaos.test_id}/"
    while not chaos.stop.is_set():
        try:
            with connect(url, additional_headers={"X-Api-Key": chaos.api_key}) as websocket:
                while not chaos.stop.is_set():
                    try:
                        websocket.recv(timeout=1)
                    except TimeoutError:
                        continue
        except (ConnectionClosed, OSError) as error:
            if not chaos.stop.is_set():
                chaos.websocket_closes += 1
                print(f"  the idle websocket closed: {error!r}", flush=True)
                time.sleep(1)


def terminate_connections(chaos: Chaos) -> int:
    name = chaos.dsn.rsplit("/", 1)[-1]
    with harness_connection(chaos.dsn) as connection:
        row = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name <> %s",
            (name, HARNESS),
        ).fetchone()
    return int(row[0]) if row else 0


def inflict(chaos: Chaos) -> None:
    """The faults, spread over about two minutes."""
    rng = random.Random(7)
    workers = ["worker", "worker2"]
    schedule: list[tuple[float, str]] = [
        (8.0 + 10 * index, "kill") for index in range(WORKER_KILLS)
    ]
    schedule += [(35.0, "redis"), (20.0, "terminate"), (55.0, "terminate"), (95.0, "terminate")]
    started = time.monotonic()
    for at, kind in sorted(schedule):
        while time.monotonic() - started < at:
            if chaos.stop.wait(0.2):
                return
        if kind == "kill":
            name = rng.choice(workers)
            os.kill(chaos.runtime.pid(name), signal.SIGKILL)
            chaos.runtime.processes[name].wait(timeout=10)
            chaos.fault(f"SIGKILL {name}")
            ready = chaos.runtime.ready_count(name)
            chaos.runtime.start_one_worker(
                name, threads=runtime.WORKER_CONCURRENCY // 2, pool_max=24
            )
            chaos.runtime.wait_ready(name, ready_lines=ready + 1)
        elif kind == "redis":
            chaos.redis.kill()
            chaos.fault("Redis killed")
            time.sleep(REDIS_DOWN_S)
            chaos.redis.start()
            chaos.fault("Redis started again, empty")
        else:
            terminated = terminate_connections(chaos)
            chaos.fault(f"terminated {terminated} PostgreSQL connections")


def tasks_received_after(log: Path, moment: datetime) -> int:
    """Replays and grades a worker's log says it received after ``moment`` (UTC)."""
    pattern = re.compile(
        r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+: INFO/MainProcess\] Task \S+ received"
    )
    received = 0
    for line in log.read_text(errors="replace").splitlines():
        found = pattern.match(line)
        if found and datetime.fromisoformat(found.group(1)).replace(tzinfo=UTC) > moment:
            received += 1
    return received


def outcome(chaos: Chaos) -> dict[str, Any]:
    with harness_connection(chaos.dsn) as connection:
        runs: dict[str, int] = {
            str(status): int(count)
            for status, count in connection.execute(
                "SELECT status, count(*) FROM tests_app_testrun WHERE test_id = %s GROUP BY 1",
                (chaos.test_id,),
            ).fetchall()
        }
        failed_at_limit = connection.execute(
            "SELECT count(*) FROM tests_app_testrun AS run WHERE run.test_id = %s"
            " AND run.status = 'failed' AND NOT EXISTS (SELECT 1 FROM tests_app_testinvocation"
            " AS invocation WHERE invocation.run_id = run.id"
            " AND invocation.error NOT LIKE 'worker lost%%')",
            (chaos.test_id,),
        ).fetchone()
        lost = connection.execute(
            "SELECT count(*) FROM tests_app_testinvocation WHERE test_id = %s"
            " AND status = 'created' AND task_id <> ''",
            (chaos.test_id,),
        ).fetchone()
        duplicated = connection.execute(
            "SELECT count(*) FROM (SELECT invocation_id, turn FROM tests_app_replaystep"
            " GROUP BY 1, 2 HAVING count(*) > 1) AS twice"
        ).fetchone()
    stats = model_server(chaos.runtime.openai_port, "/stats")
    failed = int(runs.get("failed", 0))
    at_limit = int(failed_at_limit[0]) if failed_at_limit else 0
    return {
        "runs": sum(runs.values()),
        "completed": int(runs.get("completed", 0)),
        "failed_at_limit": at_limit,
        "failed_otherwise": failed - at_limit,
        "lost": int(lost[0]) if lost else 0,
        "executed_twice": int(stats.get("repeated_calls", 0)),
        "stuck": sum(
            count for status, count in runs.items() if status in ("pending", "claimed", "running")
        ),
        "steps_duplicated": int(duplicated[0]) if duplicated else 0,
        "websocket_closes": chaos.websocket_closes,
        "runs_by_status": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("CHAOS_DATABASE_URL") or DEFAULT_DATABASE_URL
    )
    arguments = parser.parse_args()
    log_directory = RESULTS / "chaos-logs"
    shutil.rmtree(log_directory, ignore_errors=True)
    log_directory.mkdir(parents=True)
    redis = RedisServer()
    redis.start()
    print(f"chaos: its own database and a Redis of its own on port {redis.port}", flush=True)
    runtime.recreate_database(arguments.database_url)
    runtime.migrate(
        database_url=arguments.database_url, redis_url=redis.url, log_directory=log_directory
    )
    os.environ.update(
        runtime.base_environment(database_url=arguments.database_url, redis_url=redis.url)
    )
    import django

    django.setup()

    processes = runtime.Runtime(
        database_url=arguments.database_url, redis_url=redis.url, log_directory=log_directory
    )
    chaos = Chaos(runtime=processes, redis=redis, dsn=arguments.database_url, api_key="")
    try:
        processes.start_openai(delay_ms=MODEL_DELAY_MS)
        processes.start_web(processes=2, http_server="granian")
        processes.worker_processes = 2
        processes.start_worker(processes=2)
        processes.start_beat()
        chaos.test_id = seed(chaos, processes.openai_port)
        print(
            f"chaos: test {chaos.test_id}, {RUNS} runs x {TURNS} turns, {AGENTS} agents", flush=True
        )
        threads = [threading.Thread(target=agent, args=(chaos, index)) for index in range(AGENTS)]
        watcher = threading.Thread(target=idle_websocket, args=(chaos,), daemon=True)
        watcher.start()
        for thread in threads:
            thread.start()
        inflict(chaos)
        deadline = time.monotonic() + SETTLE_S
        with psycopg.connect(chaos.dsn, autocommit=True) as connection:
            while (
                time.monotonic() < deadline
                and test_status(connection, chaos.test_id) != "completed"
            ):
                time.sleep(1)
        chaos.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        result = outcome(chaos)
        last = chaos.last_fault_at or datetime.now(UTC)
        received = {
            name: tasks_received_after(log_directory / f"{name}.log", last)
            for name in ("worker", "worker2")
        }
    finally:
        chaos.stop.set()
        processes.stop()
        redis.kill()
    print()
    print(f"{'':32} {'figure':>8}  target")
    for label, key, target in TABLE_ROWS:
        print(f"{label:32} {result[key]:>8}  {'' if target is None else target}")
    for name, count in received.items():
        print(f"{'tasks received after the last fault by ' + name:32} {count:>8}  > 0")
    print(f"\nruns by status: {result['runs_by_status']}")
    if chaos.run_failures:
        print(
            f"agent calls that failed: {len(chaos.run_failures)}: {sorted(set(chaos.run_failures))}"
        )
    print("faults:\n  " + "\n  ".join(chaos.faults))
    (RESULTS / "chaos-latest.json").write_text(
        json.dumps(
            {**result, "tasks_received_after_last_fault": received, "faults": chaos.faults},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
