"""The embedded default end to end, as `make run` serves it: SQLite, in-process background work,
in-memory channel layer, one daphne process, no PostgreSQL or Redis.

An agent with only an API key and the reference page runs a demo benchmark to the end.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY_PATTERN = re.compile(r"\b([A-Za-z0-9]{8}\.[A-Za-z0-9]{20,})\b")

pytestmark = pytest.mark.integration


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "BACKGROUND_BACKEND", "REPLAYBENCH_MODE"}
    }
    env["REPLAYBENCH_DATA_DIR"] = str(data_dir)
    # Graded by the offline grader: the real local model has its own test (test_local_model).
    env["LOCAL_MODEL"] = "off"
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("embedded")
    env = embedded_env(data_dir)
    manage(env, "migrate", "--noinput")
    seed_output = manage(env, "seed_demo")
    keys = KEY_PATTERN.findall(seed_output)
    assert keys, f"seed_demo printed no API key:\n{seed_output}"
    port = free_port()
    log = (data_dir / "daphne.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "config.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/admin/login/", timeout=2)  # noqa: S310
            break
        except OSError:  # refused, reset or timed out while daphne starts
            time.sleep(0.2)
    else:
        process.terminate()
        pytest.fail("daphne did not start: " + (data_dir / "daphne.log").read_text())
    yield {"base": base, "key": keys[-1], "seed_output": seed_output, "data_dir": data_dir}
    process.terminate()
    process.wait(timeout=10)
    log.close()


def post(
    server: dict[str, Any], path: str, body: dict[str, Any], *, key: str | None = ""
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-Api-Key"] = key or server["key"]
    request = urllib.request.Request(  # noqa: S310
        server["base"] + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_search_without_credentials_is_401_with_the_error_body(
    embedded_server: dict[str, Any],
) -> None:
    status, body = post(embedded_server, "/api/v5/artifacts/test/search", {}, key=None)
    assert status == 401
    assert set(body) == {"detail", "code"}
    assert body["code"] == "not_authenticated"


def test_admin_login_page_is_served_with_its_styles(embedded_server: dict[str, Any]) -> None:
    with urllib.request.urlopen(embedded_server["base"] + "/admin/login/") as response:  # noqa: S310
        assert response.status == 200
        assert b"csrfmiddlewaretoken" in response.read()
    with urllib.request.urlopen(embedded_server["base"] + "/static/admin/css/base.css") as response:  # noqa: S310
        assert response.status == 200


def test_an_agent_runs_a_demo_benchmark_to_completion(embedded_server: dict[str, Any]) -> None:
    status, found = post(embedded_server, "/api/v5/artifacts/benchmark/search", {})
    assert status == 200, found
    assert found["total_count"] >= 1
    benchmark = found["benchmarks"][0]

    status, started = post(
        embedded_server, "/api/v5/artifacts/test/start", {"benchmark_id": benchmark["id"]}
    )
    assert status == 200, started
    test_id = started["test_id"]

    claimed = 0
    while True:
        status, claim = post(embedded_server, "/api/v5/artifacts/test/next", {"test_id": test_id})
        if status == 409:
            break
        assert status == 200, claim
        claimed += 1
        ids = {
            "test_id": test_id,
            "test_invocation_id": claim["invocation_id"],
            "run_id": claim["run_id"],
        }
        status, ran = post(embedded_server, "/api/v5/artifacts/test/run", ids)
        assert status == 200, ran
        assert ran == {
            "test_id": test_id,
            "invocation_id": claim["invocation_id"],
            "run_id": claim["run_id"],
        }

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, detail = post(
                embedded_server, "/api/v5/artifacts/test/get", {"test_id": test_id}
            )
            assert status == 200
            states = {item["id"]: item["status"] for item in detail["invocations"]}
            if states.get(claim["invocation_id"]) == "replayed":
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"invocation never replayed: {states}")

        grade: dict[str, Any] = (
            {"grade": True} if claimed == 1 else {"score": 0.9, "feedback": "fine"}
        )
        status, ended = post(embedded_server, "/api/v5/artifacts/test/end", {**ids, **grade})
        assert status == 200, ended
        assert ended["invocation_id"] == claim["invocation_id"]
        assert ended["grade_id"]

    assert claimed == benchmark["entries"] * benchmark["runs_per_entry"]
    assert claim["code"] == "test_completed"

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, detail = post(embedded_server, "/api/v5/artifacts/test/get", {"test_id": test_id})
        if detail["status_summary"]["graded"] == claimed:
            break
        time.sleep(0.1)
    assert detail["status"] == "completed"
    assert detail["status_summary"]["graded"] == claimed
    assert all(run["score"] is not None for run in detail["runs"])


def stored_states(server: dict[str, Any], invocation_id: str, run_id: str) -> tuple[str, ...]:
    """The invocation's status and error and its run's status, read from the server's SQLite."""
    with sqlite3.connect(server["data_dir"] / "replaybench.sqlite3", timeout=20) as database:
        status, error = database.execute(
            "SELECT status, error FROM tests_app_testinvocation WHERE id = ?",
            (uuid.UUID(invocation_id).hex,),
        ).fetchone()
        (run_status,) = database.execute(
            "SELECT status FROM tests_app_testrun WHERE id = ?", (uuid.UUID(run_id).hex,)
        ).fetchone()
    return str(status), str(error), str(run_status)


def test_the_server_sweeps_its_own_stranded_replays(embedded_server: dict[str, Any]) -> None:
    """No beat runs beside `make run`: the server gives back a replay its own earlier life left
    running (here, a heartbeat from long ago)."""
    _, found = post(embedded_server, "/api/v5/artifacts/benchmark/search", {})
    benchmark_id = found["benchmarks"][0]["id"]
    _, started = post(
        embedded_server, "/api/v5/artifacts/test/start", {"benchmark_id": benchmark_id}
    )
    answered, claim = post(
        embedded_server, "/api/v5/artifacts/test/next", {"test_id": started["test_id"]}
    )
    assert answered == 200, claim
    with sqlite3.connect(embedded_server["data_dir"] / "replaybench.sqlite3", timeout=20) as db:
        db.execute(
            "UPDATE tests_app_testinvocation SET status = 'running',"
            " started_at = '2000-01-01 00:00:00', heartbeat_at = '2000-01-01 00:00:00'"
            " WHERE id = ?",
            (uuid.UUID(claim["invocation_id"]).hex,),
        )
        db.execute(
            "UPDATE tests_app_testrun SET status = 'running' WHERE id = ?",
            (uuid.UUID(claim["run_id"]).hex,),
        )

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, error, run_status = stored_states(
            embedded_server, claim["invocation_id"], claim["run_id"]
        )
        if status == "failed":
            break
        time.sleep(0.5)

    assert (status, run_status) == ("failed", "pending")
    assert error.startswith("worker lost")


def wait_until_completed_and_graded(server: dict[str, Any], test_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, detail = post(server, "/api/v5/artifacts/test/get", {"test_id": test_id})
        assert status == 200, detail
        summary = detail["status_summary"]
        if detail["status"] == "completed" and summary["graded"] == summary["total_runs"]:
            return detail
        time.sleep(0.5)
    pytest.fail(f"The test did not complete with every run graded: {detail['status_summary']}")


def test_run_all_drives_a_demo_test_on_the_servers_threads(
    embedded_server: dict[str, Any],
) -> None:
    _, found = post(embedded_server, "/api/v5/artifacts/benchmark/search", {})
    benchmark = found["benchmarks"][0]
    _, started = post(
        embedded_server, "/api/v5/artifacts/test/start", {"benchmark_id": benchmark["id"]}
    )

    status, body = post(
        embedded_server,
        "/api/v5/artifacts/test/run_all",
        {"test_id": started["test_id"], "concurrency": 4},
    )

    assert status == 200, body
    # LOCAL_MODEL is off here: the offline reference grader grades, and the answer says so.
    assert (body["status"], body["concurrency"], body["grader"]) == ("active", 4, "reference")
    detail = wait_until_completed_and_graded(embedded_server, started["test_id"])
    assert detail["status_summary"]["total_runs"] == (
        benchmark["entries"] * benchmark["runs_per_entry"]
    )
    assert all(run["status"] == "completed" for run in detail["runs"])


def test_the_server_ticks_a_run_all_its_earlier_life_left_stalled(
    embedded_server: dict[str, Any],
) -> None:
    """A run-all whose last tick was lost with the server process (here, one from long ago) is
    moved on by the server's own sweep and drives its test to the end."""
    _, found = post(embedded_server, "/api/v5/artifacts/benchmark/search", {})
    _, started = post(
        embedded_server,
        "/api/v5/artifacts/test/start",
        {"benchmark_id": found["benchmarks"][0]["id"]},
    )
    test_id = uuid.UUID(started["test_id"]).hex
    long_ago = "2000-01-01 00:00:00"
    with sqlite3.connect(embedded_server["data_dir"] / "replaybench.sqlite3", timeout=20) as db:
        (starter,) = db.execute(
            "SELECT created_by_id FROM tests_app_test WHERE id = ?", (test_id,)
        ).fetchone()
        db.execute(
            "INSERT INTO tests_app_runall (id, created_at, updated_at, test_id, status,"
            " concurrency, grade, max_runs, started_by_id, client, ticked_at, finished_at,"
            " finish_reason) VALUES (?, ?, ?, ?, 'active', 2, 'ai', NULL, ?, 'agent', ?, NULL, '')",
            (uuid.uuid4().hex, long_ago, long_ago, test_id, starter, long_ago),
        )

    wait_until_completed_and_graded(embedded_server, started["test_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sqlite3.connect(embedded_server["data_dir"] / "replaybench.sqlite3", timeout=20) as db:
            rows = db.execute(
                "SELECT status, finish_reason FROM tests_app_runall WHERE test_id = ?", (test_id,)
            ).fetchall()
        if rows != [("active", "")]:
            break
        time.sleep(0.5)
    assert rows == [("finished", "completed")]
