"""What every scenario gets: the runtime, the seeded world, the sizes, and the floor helpers."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import psycopg

from bench.client import API, ApiClient
from bench.runtime import HOST, Runtime
from bench.seed import World

T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    search_tests: tuple[int, ...]
    search_samples: int
    next_runs: int
    next_clients: int
    replay_entries: int
    replay_turns: int
    first_event_samples: int
    export_runs: int
    export_steps_per_run: int
    get_runs: int
    get_samples: int
    compare_entries: int
    compare_samples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes(
    search_tests=(100_000, 1_000_000),
    search_samples=200,
    next_runs=5_000,
    next_clients=16,
    replay_entries=1_000,
    replay_turns=3,
    first_event_samples=50,
    export_runs=100_000,
    export_steps_per_run=3,
    get_runs=10_000,
    get_samples=100,
    compare_entries=10_000,
    compare_samples=100,
)

QUICK = Sizes(
    search_tests=(10_000, 100_000),
    search_samples=30,
    next_runs=1_000,
    next_clients=16,
    replay_entries=100,
    replay_turns=3,
    first_event_samples=15,
    export_runs=10_000,
    export_steps_per_run=3,
    get_runs=10_000,
    get_samples=30,
    compare_entries=10_000,
    compare_samples=30,
)

# Statements that change nothing a later request reads; the floor replays only reads.
READ_PREFIXES = ("select", "with")


@dataclass
class Context:
    runtime: Runtime
    world: World
    sizes: Sizes
    quick: bool
    dsn: str
    rng: random.Random
    notes: list[str]

    def client(self, api_key: str | None = None) -> ApiClient:
        return ApiClient(
            host=HOST, port=self.runtime.web_port, api_key=api_key or self.world.operator_key
        )

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=autocommit)

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.notes.append(text)

    def capture_sql(
        self, endpoint: str, body: dict[str, Any], api_key: str
    ) -> tuple[Any, list[str]]:
        """Run one endpoint in this process (cache off) and return its answer and its SQL.

        The SQL is what PostgreSQL received: Django's psycopg 3 backend binds parameters on the
        client, so each captured statement can be replayed verbatim as the floor.
        """
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        client = Client(headers={"X-Api-Key": api_key})
        with CaptureQueriesContext(connection) as captured:
            response = client.post(
                f"{API}/test/{endpoint}", data=json.dumps(body), content_type="application/json"
            )
        if response.status_code != 200:
            raise RuntimeError(
                f"in-process {endpoint} answered {response.status_code}: {response.content[:300]!r}"
            )
        return response.json(), [query["sql"] for query in captured.captured_queries]

    def time_statements(
        self, connection: psycopg.Connection[Any], statements: Sequence[str]
    ) -> float:
        """Seconds to run the read statements one after another, fetching every row."""
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for statement in statements:
                if statement.lstrip().lower().startswith(READ_PREFIXES):
                    cursor.execute(statement)  # verbatim: no parameters to interpolate
                    cursor.fetchall()
        return time.perf_counter() - started

    def time_against_floor(
        self,
        client: ApiClient,
        endpoint: str,
        body: dict[str, Any],
        *,
        samples: int,
        warm_up: int,
    ) -> tuple[list[float], list[float], list[str]]:
        """Milliseconds of ``samples`` calls of ``endpoint`` over HTTP (after ``warm_up``
        calls); of as many runs of the SQL it sent, captured in-process (its floor); that SQL."""
        for _ in range(warm_up):
            client.call(endpoint, body)
        durations = []
        for _ in range(samples):
            response = client.post(f"{API}/test/{endpoint}", body)
            if response.status != 200:
                raise RuntimeError(f"{endpoint} answered {response.status}: {response.body}")
            durations.append(response.seconds * 1000)
        _, statements = self.capture_sql(endpoint, body, self.world.operator_key)
        with self.connect() as connection:
            floors = [self.time_statements(connection, statements) * 1000 for _ in range(samples)]
        return durations, floors, statements


def parallel(workers: int, job: Callable[[int], T]) -> list[T]:
    """Run ``job(worker_index)`` on ``workers`` threads at once and return their results."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(job, range(workers)))
