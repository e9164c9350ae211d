"""The production HTTP server: granian serving ``config.wsgi`` with two worker processes.

Agents call the API there while daphne keeps the websockets (README, "Production"). The test
drives a whole replay through granian (a Celery worker replays it), claims from concurrent
clients spread over both processes, and checks the one error body and the static files.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests import factories
from tests.integration.conftest import WorkerProcess
from tests.integration.daphne import (
    DaphneServer,
    post_api,
    production_environment,
    serve_granian,
)
from tests_app.models import TestInvocation

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT_S = 30


@pytest.fixture
def granian(transactional_db: Any) -> Iterator[DaphneServer]:
    environment = production_environment()
    with serve_granian(lambda _server: environment, workers=2) as server:
        yield server


def call(server: DaphneServer, key: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
    return post_api(server, key, action, body, timeout=WAIT_S)


def test_an_agent_replays_a_run_through_granian(
    granian: DaphneServer, celery_worker: WorkerProcess, operator: Any, benchmark: Any
) -> None:
    _, key = factories.make_api_key(operator)
    status, started = call(granian, key, "start", {"benchmark_id": str(benchmark.pk)})
    assert status == 200
    test_id = started["test_id"]
    status, claim = call(granian, key, "next", {"test_id": test_id})
    assert status == 200
    run_body = {
        "test_id": test_id,
        "test_invocation_id": claim["invocation_id"],
        "run_id": claim["run_id"],
    }
    assert call(granian, key, "run", run_body)[0] == 200

    deadline = time.monotonic() + WAIT_S
    invocation = TestInvocation.objects.get(pk=claim["invocation_id"])
    while invocation.status != "replayed" and time.monotonic() < deadline:
        time.sleep(0.1)
        invocation.refresh_from_db()
    assert invocation.status == "replayed", celery_worker.log()
    assert invocation.steps.count() == 3

    status, again = call(granian, key, "run", run_body)
    assert status == 409
    assert again["code"] == "invocation_replayed"
    status, detail = call(granian, key, "get", {"test_id": test_id})
    assert status == 200
    assert [item["status"] for item in detail["invocations"]] == ["replayed"]


def test_concurrent_claims_over_both_processes_never_share_a_run(
    granian: DaphneServer, operator: Any, research: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=40, turns=1)
    _, key = factories.make_api_key(operator)
    test_id = call(granian, key, "start", {"benchmark_id": str(benchmark.pk)})[1]["test_id"]
    claimed: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def claim_until_done() -> None:
        while True:
            status, body = call(granian, key, "next", {"test_id": test_id})
            with lock:
                statuses.append(status)
                if status != 200:
                    return
                claimed.append(body["run_id"])

    threads = [threading.Thread(target=claim_until_done) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(claimed) == 40
    assert len(set(claimed)) == 40
    assert sorted(set(statuses)) == [200, 409]


def test_errors_and_static_files(granian: DaphneServer, viewer: Any) -> None:
    status, body = call(granian, "not-a-key", "search", {})
    assert status == 401
    assert body["code"] == "not_authenticated"
    _, key = factories.make_api_key(viewer)
    status, body = call(granian, key, "search", {"page_size": "many"})
    assert status == 400
    assert body["code"] == "invalid"
    assert "page_size" in body["fields"]
    with urllib.request.urlopen(  # noqa: S310
        f"{granian.http_url}/static/tests_app/app.css", timeout=WAIT_S
    ) as response:
        assert response.status == 200
        assert b"{" in response.read()
