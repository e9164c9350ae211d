"""POST /api/v5/artifacts/test/export and GET /api/v5/uploads/<id>/download."""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from django.test import AsyncRequestFactory
from rest_framework.test import APIClient

from tests import factories
from tests.conftest import require_service
from tests_app.api.discovery_views import UploadDownloadView
from tests_app.models import Grade, TestInvocation, TestRun, Upload

pytestmark = pytest.mark.django_db

EXPORT = "/api/v5/artifacts/test/export"
TRICKY = 'Commas, "quotes",\nnew lines\r\nand ünïcödé: 日本語のテキスト, Ελληνικά, עברית 🚀'


@pytest.fixture(autouse=True)
def _media_in_tmp(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def download_url(upload_id: str) -> str:
    return f"/api/v5/uploads/{upload_id}/download"


def exported(client: APIClient, test_id: Any) -> dict[str, Any]:
    response = client.post(EXPORT, {"test_id": str(test_id)}, format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


def read_zip(content: bytes) -> tuple[dict[str, Any], list[dict[str, str]], list[dict[str, str]]]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == ["manifest.json", "runs.csv", "turns.csv"]
    manifest = json.loads(archive.read("manifest.json").decode("utf-8"))

    def rows(name: str) -> list[dict[str, str]]:
        text = archive.read(name).decode("utf-8")
        return list(csv.DictReader(io.StringIO(text, newline="")))

    return manifest, rows("runs.csv"), rows("turns.csv")


def build_test(benchmark: Any, operator: Any) -> dict[str, Any]:
    """A test with three runs: graded after a retry, replayed without grade, and never claimed."""
    test = factories.TestFactory.create(benchmark=benchmark, status="running", created_by=operator)
    entries = list(benchmark.entries.order_by("position"))
    entries[0].title = TRICKY
    entries[0].save()
    base = datetime(2026, 3, 1, 12, tzinfo=UTC)
    first = factories.TestRunFactory.create(
        test=test, entry=entries[0], ordinal=1, status=TestRun.Status.COMPLETED, attempts=2
    )
    second = factories.TestRunFactory.create(
        test=test, entry=entries[1], ordinal=2, status=TestRun.Status.RUNNING
    )
    third = factories.TestRunFactory.create(test=test, entry=entries[0], ordinal=3, cycle=1)
    failed = factories.TestInvocationFactory.create(
        run=first, status=TestInvocation.Status.FAILED, error="timeout", created_at=base
    )
    factories.GradeFactory.create(invocation=failed, score=0.1, passed=False, created_at=base)
    latest = factories.TestInvocationFactory.create(
        run=first,
        status=TestInvocation.Status.ENDED,
        actor=operator,
        steps_count=3,
        created_at=base + timedelta(minutes=5),
        started_at=base + timedelta(minutes=5),
    )
    done = factories.GradeFactory.create(
        invocation=latest,
        source=Grade.Source.AGENT,
        score=0.9,
        passed=True,
        feedback=TRICKY,
        created_at=base + timedelta(minutes=6),
    )
    # A newer grade still pending does not replace the current (done) one.
    factories.GradeFactory.create(
        invocation=latest,
        status=Grade.Status.PENDING,
        score=None,
        passed=None,
        created_at=base + timedelta(minutes=7),
    )
    first.latest_invocation = latest
    first.save()
    running = factories.TestInvocationFactory.create(
        run=second, status=TestInvocation.Status.REPLAYED, created_at=base + timedelta(minutes=8)
    )
    second.latest_invocation = running
    second.save()
    # Steps written out of order: the export orders by run, invocation, then turn.
    for turn in (3, 1, 2):
        factories.ReplayStepFactory.create(
            invocation=latest, turn=turn, input=f"Q{turn} {TRICKY}", output=f"A{turn}"
        )
    factories.ReplayStepFactory.create(invocation=failed, turn=1, input="Q1 first try", output="")
    factories.ReplayStepFactory.create(
        invocation=running, turn=1, input="Q1 second run", reference=None
    )
    return {
        "test": test,
        "runs": [first, second, third],
        "latest": latest,
        "running": running,
        "failed": failed,
        "done": done,
    }


def test_round_trip(client_for: Any, viewer: Any, operator: Any, benchmark: Any) -> None:
    world = build_test(benchmark, operator)
    test = world["test"]
    client = client_for(viewer)

    body = exported(client, test.pk)

    upload = Upload.objects.get(pk=body["upload_id"])
    assert upload.test_id == test.pk
    assert upload.created_by == viewer
    assert body["file_name"] == upload.file_name
    assert body["file_name"].startswith(f"test-{test.pk}-")
    assert body["file_name"].endswith(".zip")
    # 3 runs + 5 replay steps.
    assert body["row_count"] == upload.row_count == 8

    response = client.get(download_url(body["upload_id"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert body["file_name"] in response["Content-Disposition"]
    assert "attachment" in response["Content-Disposition"]
    content = b"".join(response.streaming_content)
    assert len(content) == upload.size_bytes

    manifest, runs, turns = read_zip(content)
    assert manifest["row_count"] == body["row_count"] == len(runs) + len(turns)
    assert {item["name"]: item["rows"] for item in manifest["files"]} == {
        "runs.csv": 3,
        "turns.csv": 5,
    }
    assert manifest["test"]["id"] == str(test.pk)
    assert manifest["test"]["rubric"]["criteria"] == benchmark.eval.rubric.criteria
    assert manifest["exported_by"] == "viewer"

    assert [row["run_id"] for row in runs] == [str(run.pk) for run in world["runs"]]
    graded = runs[0]
    assert graded["entry_title"] == TRICKY
    assert graded["invocation_id"] == str(world["latest"].pk)
    assert graded["invocation_status"] == "ended"
    assert graded["actor_name"] == "Olive Operator"
    assert graded["attempts"] == "2"
    assert graded["grade_id"] == str(world["done"].pk)
    assert graded["grade_status"] == "done"
    assert graded["score"] == "0.9"
    assert graded["passed"] == "true"
    assert graded["feedback"] == TRICKY
    assert runs[1]["invocation_id"] == str(world["running"].pk)
    assert runs[1]["grade_id"] == ""
    assert runs[2]["invocation_id"] == ""
    assert runs[2]["run_status"] == "pending"

    assert [(row["run_id"], row["invocation_id"], row["turn"]) for row in turns] == [
        (str(world["runs"][0].pk), str(world["failed"].pk), "1"),
        (str(world["runs"][0].pk), str(world["latest"].pk), "1"),
        (str(world["runs"][0].pk), str(world["latest"].pk), "2"),
        (str(world["runs"][0].pk), str(world["latest"].pk), "3"),
        (str(world["runs"][1].pk), str(world["running"].pk), "1"),
    ]
    assert turns[1]["input"] == f"Q1 {TRICKY}"
    assert turns[3]["output"] == "A3"
    assert turns[4]["reference"] == ""


def test_an_empty_test_exports_headers_only(client_for: Any, viewer: Any, benchmark: Any) -> None:
    test = factories.TestFactory.create(benchmark=benchmark)
    client = client_for(viewer)
    body = exported(client, test.pk)
    assert body["row_count"] == 0
    content = b"".join(client.get(download_url(body["upload_id"])).streaming_content)
    manifest, runs, turns = read_zip(content)
    assert runs == []
    assert turns == []
    assert manifest["row_count"] == 0
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert archive.read("runs.csv").decode().startswith("test_id,run_id,cycle,ordinal,")


def test_many_runs_stream_in_chunks(client_for: Any, viewer: Any, benchmark: Any) -> None:
    from tests_app.services import exporting

    test = factories.TestFactory.create(benchmark=benchmark)
    entry = benchmark.entries.first()
    runs = TestRun.objects.bulk_create(
        [
            TestRun(test=test, entry=entry, cycle=1, ordinal=ordinal)
            for ordinal in range(1, exporting.CHUNK_SIZE + 40)
        ]
    )
    invocations = TestInvocation.objects.bulk_create(
        [TestInvocation(test=test, run=run, status="ended") for run in runs]
    )
    for run, invocation in zip(runs, invocations, strict=True):
        run.latest_invocation = invocation
    TestRun.objects.bulk_update(runs, ["latest_invocation"])
    Grade.objects.bulk_create(
        [
            Grade(invocation=invocation, source="agent", status="done", score=0.5, passed=False)
            for invocation in invocations
        ]
    )
    client = client_for(viewer)
    body = exported(client, test.pk)
    assert body["row_count"] == len(runs)
    _, rows, _ = read_zip(b"".join(client.get(download_url(body["upload_id"])).streaming_content))
    assert [int(row["ordinal"]) for row in rows] == list(range(1, len(runs) + 1))
    # Grades were looked up per chunk and still matched to every run, across chunk borders.
    assert all(row["score"] == "0.5" and row["grade_id"] for row in rows)


def test_outsider_gets_404_for_export_and_download(
    client_for: Any, viewer: Any, outsider: Any, benchmark: Any
) -> None:
    test = factories.TestFactory.create(benchmark=benchmark)
    body = exported(client_for(viewer), test.pk)
    client = client_for(outsider)

    response = client.post(EXPORT, {"test_id": str(test.pk)}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    response = client.get(download_url(body["upload_id"]))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert Upload.objects.filter(test=test).count() == 1


def test_unknown_ids_are_404(client_for: Any, viewer: Any) -> None:
    client = client_for(viewer)
    response = client.post(EXPORT, {"test_id": str(uuid.uuid4())}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    response = client.get(download_url(str(uuid.uuid4())))
    assert response.status_code == 404


def test_validation_and_auth(client_for: Any, viewer: Any) -> None:
    response = client_for(viewer).post(EXPORT, {"test_id": "nope"}, format="json")
    assert response.status_code == 400
    assert "test_id" in response.json()["fields"]
    response = client_for(viewer).post(EXPORT, {}, format="json")
    assert response.status_code == 400
    assert "test_id" in response.json()["fields"]
    assert (
        APIClient().post(EXPORT, {"test_id": str(uuid.uuid4())}, format="json").status_code == 401
    )
    assert APIClient().get(download_url(str(uuid.uuid4()))).status_code == 401


def test_download_ignores_the_accept_header(client_for: Any, viewer: Any, benchmark: Any) -> None:
    test = factories.TestFactory.create(benchmark=benchmark)
    client = client_for(viewer)
    body = exported(client, test.pk)
    response = client.get(download_url(body["upload_id"]), HTTP_ACCEPT="application/zip")
    assert response.status_code == 200
    read_zip(b"".join(response.streaming_content))


def test_download_under_asgi_streams_with_an_async_iterator(viewer: Any, benchmark: Any) -> None:
    test = factories.TestFactory.create(benchmark=benchmark)
    _, key = factories.make_api_key(viewer)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    body = exported(client, test.pk)

    request = AsyncRequestFactory().get(download_url(body["upload_id"]), headers={"X-Api-Key": key})
    response = UploadDownloadView.as_view()(request, upload_id=uuid.UUID(body["upload_id"]))

    assert response.status_code == 200
    # An async iterator: Django's ASGI handler sends it chunk by chunk instead of buffering it.
    assert isinstance(response, StreamingHttpResponse)
    assert response.is_async

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response])

    content = async_to_sync(collect)()
    assert int(response["Content-Length"]) == len(content)
    manifest, _, _ = read_zip(content)
    assert manifest["test"]["id"] == str(test.pk)


def test_export_lists_in_get_resources(client_for: Any, viewer: Any, benchmark: Any) -> None:
    test = factories.TestFactory.create(benchmark=benchmark)
    client = client_for(viewer)
    body = exported(client, test.pk)
    response = client.post("/api/v5/artifacts/test/get", {"test_id": str(test.pk)}, format="json")
    assert response.status_code == 200
    exports = response.json()["resources"]["exports"]
    assert [item["upload_id"] for item in exports] == [body["upload_id"]]
    assert exports[0]["row_count"] == 0
    assert client.get(exports[0]["download_url"]).status_code == 200


@pytest.mark.postgres
def test_copy_writes_the_same_bytes_as_the_portable_path(operator: Any, benchmark: Any) -> None:
    """On PostgreSQL the database writes the CSV records (COPY); elsewhere the csv module does.
    Both must give the same files, byte for byte, including CRLF line ends, quoting, empty and
    missing cells, whole-number scores and microsecond timestamps."""
    from django.db import connection

    from tests_app.services import exporting

    if connection.vendor != "postgresql":
        require_service("COPY is PostgreSQL only")
    world = build_test(benchmark, operator)
    test = world["test"]
    # Cells each formatter treats specially: an empty title, a whole-number score, no actor
    # name parts, a timestamp with and without a fraction, an empty output.
    entry = world["runs"][2].entry
    extra_entry = factories.BenchmarkEntryFactory.create(benchmark=benchmark, position=99, title="")
    extra = factories.TestRunFactory.create(test=test, entry=extra_entry, ordinal=4)
    nameless = factories.UserFactory.create(
        username="nameless", first_name=" ", last_name="", password="!"
    )
    invocation = factories.TestInvocationFactory.create(
        run=extra,
        status=TestInvocation.Status.ENDED,
        actor=nameless,
        started_at=datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC),
        ended_at=datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC),
        error="",
    )
    extra.latest_invocation = invocation
    extra.save()
    factories.GradeFactory.create(invocation=invocation, score=1.0, passed=True, feedback="")
    factories.ReplayStepFactory.create(
        invocation=invocation, turn=1, input="only", output="", reference="", prompt_tokens=None
    )
    assert entry.title == TRICKY

    def files(*, use_copy: bool) -> dict[str, bytes]:
        counter = exporting._Counter()
        written = {
            name: b"".join(pieces)
            for name, pieces in exporting._csv_files(test, counter, use_copy=use_copy)
        }
        assert counter.rows == {"runs.csv": 4, "turns.csv": 6}
        return written

    copied, portable = files(use_copy=True), files(use_copy=False)
    assert copied == portable
    runs = list(csv.DictReader(io.StringIO(copied["runs.csv"].decode("utf-8"), newline="")))
    assert runs[3]["actor_name"] == "nameless"
    assert runs[3]["score"] == "1.0"
    assert runs[3]["started_at"] == "2026-03-01T12:00:00.250000+00:00"
    assert runs[3]["ended_at"] == "2026-03-01T12:00:01+00:00"
    assert copied["runs.csv"].count(b"\r\n") >= 5
