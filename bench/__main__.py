"""``python -m bench [--quick] [--only search,next,...]``: run the performance scenarios.

See bench/README.md. The harness drops and recreates its own database, flushes its own Redis
database, starts the web processes (granian for HTTP, daphne for websockets), a Celery worker
and the fake model server, runs the scenarios, prints one table and writes it as JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.calibrate import python_speed_ms, round_trip_us
from bench.stats import Row, render_table, results_path, write_results

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/replaybench_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
RESULTS = Path(__file__).resolve().parent / "results"

# (key, table order, title); run in the order listed: the heavy search seeding goes last so the
# other scenarios do not run beside a freshly loaded million-row table being vacuumed.
SCENARIOS = [
    ("next", 2, "next: concurrent claims"),
    ("replay", 3, "replay throughput"),
    ("concurrency", 7, "256 replays at once against a model that answers in 1 s"),
    ("local_model", 8, "20 conversations x 3 turns against the local model"),
    ("first_event", 4, "first event on the websocket"),
    ("get", 6, "get of a large test"),
    ("compare", 8, "compare of two large tests"),
    ("export", 5, "export of a large test"),
    ("search", 1, "search"),
]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run (~2 min)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios to run: " + ", ".join(key for key, _, _ in SCENARIOS),
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="dropped and recreated at every run (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL") or DEFAULT_REDIS_URL,
        help="flushed at every run (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the data and requests")
    parser.add_argument(
        "--http-server",
        choices=("granian", "daphne"),
        default="granian",
        help="what serves HTTP: granian (WSGI) beside a daphne for websockets, or daphne for"
        " both (default: %(default)s)",
    )
    parser.add_argument(
        "--web-processes",
        type=int,
        default=None,
        help="HTTP processes: granian workers, or daphne processes sharing one listening socket"
        " (default: 2 for granian, one per core; 1 for daphne)",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=2,
        help="Celery worker processes sharing the 32 threads (default: %(default)s, one per core)",
    )
    return parser.parse_args()


def scenario_function(key: str) -> Callable[..., list[Row]]:
    from bench.scenarios import (
        claiming,
        compare,
        detail,
        export,
        first_event,
        local_model,
        replay,
        search,
    )

    return {
        "next": claiming.run,
        "replay": replay.run,
        "concurrency": replay.run_concurrent,
        "local_model": local_model.run,
        "first_event": first_event.run,
        "get": detail.run,
        "compare": compare.run,
        "export": export.run,
        "search": search.run,
    }[key]


def main() -> None:
    arguments = parse_arguments()
    selected = [key.strip() for key in arguments.only.split(",") if key.strip()]
    unknown = set(selected) - {key for key, _, _ in SCENARIOS}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    mode = "quick" if arguments.quick else "full"
    default_processes = 2 if arguments.http_server == "granian" else 1
    if arguments.web_processes is None:
        arguments.web_processes = default_processes
    if arguments.http_server != "granian":
        mode += f"-{arguments.http_server}"
    if arguments.web_processes != default_processes:
        mode += f"-web{arguments.web_processes}"
    if arguments.worker_processes != 2:
        mode += f"-workers{arguments.worker_processes}"

    from bench import runtime

    log_directory = RESULTS / "logs"
    shutil.rmtree(RESULTS / "media", ignore_errors=True)
    shutil.rmtree(log_directory, ignore_errors=True)  # processes append to their logs
    log_directory.mkdir(parents=True, exist_ok=True)
    print(f"bench ({mode}): preparing the database and Redis", flush=True)
    runtime.recreate_database(arguments.database_url)
    runtime.flush_redis(arguments.redis_url)
    runtime.migrate(
        database_url=arguments.database_url,
        redis_url=arguments.redis_url,
        log_directory=log_directory,
    )

    os.environ.update(
        runtime.base_environment(database_url=arguments.database_url, redis_url=arguments.redis_url)
    )
    os.environ["DEBUG"] = "false"
    import django

    django.setup()
    from django.conf import settings

    # In this process the cache is off, so SQL captured for the floors is the full, uncached work.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}

    from bench.context import FULL, QUICK, Context
    from bench.seed import make_world

    sizes = QUICK if arguments.quick else FULL
    world = make_world()
    rows: dict[int, list[Row]] = {}
    notes: list[str] = []
    path = results_path(mode=mode, directory=RESULTS)

    def save(*, complete: bool) -> list[Row]:
        ordered = [row for order in sorted(rows) for row in rows[order]]
        write_results(
            rows=ordered,
            mode=mode,
            sizes=sizes.as_dict(),
            notes=notes,
            path=path,
            complete=complete,
        )
        return ordered

    started = time.monotonic()
    with runtime.running(
        database_url=arguments.database_url,
        redis_url=arguments.redis_url,
        log_directory=log_directory,
        openai_delay_ms=50,
        web_processes=arguments.web_processes,
        http_server=arguments.http_server,
        worker_processes=arguments.worker_processes,
    ) as processes:
        context = Context(
            runtime=processes,
            world=world,
            sizes=sizes,
            quick=arguments.quick,
            dsn=arguments.database_url,
            rng=random.Random(arguments.seed),
            notes=notes,
        )
        notes.append(
            f"machine speed, with the runtime idle (bench/calibrate.py; lower is faster): the"
            f" Python workload {python_speed_ms():.0f} ms, a round trip between two processes"
            f" {round_trip_us():.0f} us"
        )
        print(notes[-1], flush=True)
        for key, order, title in SCENARIOS:
            if selected and key not in selected:
                continue
            print(f"[{time.monotonic() - started:6.1f}s] {title}", flush=True)
            try:
                rows[order] = scenario_function(key)(context)
            except Exception as error:
                traceback.print_exc()
                context.note(f"{key} failed: {type(error).__name__}: {str(error)[:300]}")
                rows[order] = [Row(f"{key} (failed)", None, "", note=str(error)[:300])]
            for row in rows[order]:
                print(
                    f"    {row.scenario}: {row.figure} {row.unit} (floor {row.floor})", flush=True
                )
            save(complete=False)
    table_rows = save(complete=True)
    print()
    print(render_table(table_rows))
    for note in notes:
        print(f"note: {note}")
    shown = path.relative_to(RESULTS.parent.parent)
    print(f"\n{time.monotonic() - started:.0f} s; results written to {shown}")


if __name__ == "__main__":
    main()
