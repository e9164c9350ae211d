"""Export a test as a denormalized ZIP (DESIGN §3 "export") and read it back for download.

The ZIP holds ``runs.csv`` (one row per run, with its latest invocation and that invocation's
current grade), ``turns.csv`` (one row per replay step, in run and turn order) and
``manifest.json`` (what the files hold and how many rows; written last, once they are counted).

Memory stays bounded whatever the size of the test: rows are read with ``iterator(chunk_size=...)``
and zipstream-ng compresses them as they come into a temporary file, which then goes to Django's
storage. The file is written outside any transaction (it can take a while); only the Upload row
is created in one.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

import zipstream
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from tests_app import cache_tags
from tests_app.actors import Actor, display_name
from tests_app.models import Grade, ReplayStep, Test, TestRun, Upload
from tests_app.selectors import scope

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK_SIZE = 500
FORMAT_VERSION = 1

RUN_COLUMNS = [
    "test_id",
    "run_id",
    "cycle",
    "ordinal",
    "run_status",
    "attempts",
    "entry_id",
    "entry_position",
    "entry_title",
    "entry_turns",
    "invocation_id",
    "invocation_status",
    "client",
    "actor_name",
    "started_at",
    "ended_at",
    "steps_count",
    "invocation_error",
    "grade_id",
    "grade_source",
    "grade_status",
    "score",
    "passed",
    "feedback",
    "graded_at",
]
TURN_COLUMNS = [
    "test_id",
    "run_id",
    "cycle",
    "ordinal",
    "invocation_id",
    "invocation_status",
    "turn",
    "input",
    "output",
    "reference",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "error",
    "created_at",
]


@dataclass(frozen=True)
class ExportResult:
    upload_id: uuid.UUID
    file_name: str
    row_count: int


class _Line:
    """A file-like target for csv.writer that hands back what was written."""

    def __init__(self) -> None:
        self.value = ""

    def write(self, text: str) -> int:
        self.value += text
        return len(text)

    def take(self) -> bytes:
        value, self.value = self.value, ""
        return value.encode("utf-8")


def _batched(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class _Counter:
    def __init__(self) -> None:
        self.rows: dict[str, int] = {}


def _csv_rows(
    name: str, columns: list[str], rows: Iterable[list[Any]], counter: _Counter
) -> Iterator[bytes]:
    line = _Line()
    writer = csv.writer(line)
    writer.writerow(columns)
    counter.rows[name] = 0
    yield line.take()
    for row in rows:
        writer.writerow([_cell(value) for value in row])
        counter.rows[name] += 1
        # One write per row keeps memory flat; zipstream-ng compresses as it goes.
        yield line.take()


def _current_grades(invocation_ids: list[uuid.UUID]) -> dict[uuid.UUID, Grade]:
    """The current grade of each invocation: the newest done one, else the newest of any status
    (pending or failed), so that the export shows that grading was attempted."""
    grades: dict[uuid.UUID, Grade] = {}
    done: set[uuid.UUID] = set()
    if not invocation_ids:
        return grades
    for grade in Grade.objects.filter(invocation_id__in=invocation_ids).order_by("-created_at"):
        is_done = grade.status == Grade.Status.DONE
        if grade.invocation_id not in grades or (is_done and grade.invocation_id not in done):
            grades[grade.invocation_id] = grade
        if is_done:
            done.add(grade.invocation_id)
    return grades


def _run_rows(test: Test) -> Iterator[list[Any]]:
    runs = (
        TestRun.objects.filter(test=test)
        .select_related("entry", "latest_invocation", "latest_invocation__actor")
        .order_by("cycle", "ordinal")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for batch in _batched(runs, CHUNK_SIZE):
        # One grade query per chunk of runs, not one per run.
        grades = _current_grades(
            [run.latest_invocation_id for run in batch if run.latest_invocation_id]
        )
        for run in batch:
            invocation = run.latest_invocation
            grade = grades.get(invocation.pk) if invocation else None
            yield [
                test.pk,
                run.pk,
                run.cycle,
                run.ordinal,
                run.status,
                run.attempts,
                run.entry_id,
                run.entry.position,
                run.entry.title,
                run.entry.turns,
                invocation.pk if invocation else None,
                invocation.status if invocation else None,
                invocation.client if invocation else None,
                display_name(invocation.actor) if invocation else None,
                invocation.started_at if invocation else None,
                invocation.ended_at if invocation else None,
                invocation.steps_count if invocation else None,
                invocation.error if invocation else None,
                grade.pk if grade else None,
                grade.source if grade else None,
                grade.status if grade else None,
                grade.score if grade else None,
                grade.passed if grade else None,
                grade.feedback if grade else None,
                grade.created_at if grade else None,
            ]


def _turn_rows(test: Test) -> Iterator[list[Any]]:
    steps = (
        ReplayStep.objects.filter(invocation__test=test)
        .select_related("invocation__run")
        .order_by(
            "invocation__run__cycle",
            "invocation__run__ordinal",
            "invocation__created_at",
            "turn",
        )
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for step in steps:
        invocation = step.invocation
        run = invocation.run
        yield [
            test.pk,
            run.pk,
            run.cycle,
            run.ordinal,
            invocation.pk,
            invocation.status,
            step.turn,
            step.input,
            step.output,
            step.reference,
            step.latency_ms,
            step.prompt_tokens,
            step.completion_tokens,
            step.error,
            step.created_at,
        ]


def _manifest(
    test: Test, actor: Actor, exported_at: datetime, counter: _Counter
) -> Iterator[bytes]:
    # A generator, so that it runs only after the CSVs before it were streamed and counted.
    files: list[dict[str, Any]] = [
        {"name": "runs.csv", "columns": RUN_COLUMNS, "rows": counter.rows.get("runs.csv", 0)},
        {"name": "turns.csv", "columns": TURN_COLUMNS, "rows": counter.rows.get("turns.csv", 0)},
    ]
    manifest = {
        "format": "replaybench-test-export",
        "version": FORMAT_VERSION,
        "exported_at": exported_at.isoformat(),
        "exported_by": actor.display_name,
        "encoding": "utf-8",
        "test": {
            "id": str(test.pk),
            "status": test.status,
            "infinite_mode": test.infinite_mode,
            "cycle": test.cycle,
            "is_archived": test.is_archived,
            "created_at": test.created_at.isoformat(),
            "started_at": test.started_at.isoformat() if test.started_at else None,
            "finished_at": test.finished_at.isoformat() if test.finished_at else None,
            "created_by": display_name(test.created_by),
            "benchmark": {"id": str(test.benchmark_id), "name": test.benchmark.name},
            "eval": {"id": str(test.eval_id), "name": test.eval.name},
            "rubric": {
                "id": str(test.eval.rubric_id),
                "name": test.eval.rubric.name,
                "pass_threshold": test.eval.rubric.pass_threshold,
                "criteria": test.eval.rubric.criteria,
            },
            "department": {"id": str(test.department_id), "name": test.department.name},
        },
        "files": files,
        "row_count": sum(file["rows"] for file in files),
    }
    yield json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8")


def export_test(*, actor: Actor, test_id: uuid.UUID | str) -> ExportResult:
    """Write the ZIP of a test the caller may see (viewers may export) and record an Upload."""
    test = scope.get_visible_test(
        user=actor.user,
        test_id=test_id,
        queryset=Test.objects.select_related(
            "benchmark", "eval__rubric", "department", "created_by"
        ),
    )
    exported_at = timezone.now()
    counter = _Counter()
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_DEFLATED, sized=False)
    archive.add(_csv_rows("runs.csv", RUN_COLUMNS, _run_rows(test), counter), "runs.csv")
    archive.add(_csv_rows("turns.csv", TURN_COLUMNS, _turn_rows(test), counter), "turns.csv")
    archive.add(_manifest(test, actor, exported_at, counter), "manifest.json")

    file_name = f"test-{test.pk}-{exported_at:%Y%m%dT%H%M%SZ}.zip"
    with tempfile.TemporaryFile() as spool:
        size = 0
        for chunk in archive:
            spool.write(chunk)
            size += len(chunk)
        spool.seek(0)
        upload = Upload(
            test=test,
            kind=Upload.Kind.EXPORT,
            file_name=file_name,
            row_count=sum(counter.rows.values()),
            size_bytes=size,
            created_by=actor.user,
        )
        upload.file.save(file_name, File(spool, name=file_name), save=False)
    try:
        with transaction.atomic():
            upload.save()
            # get lists the test's exports.
            cache_tags.invalidate_on_commit(cache_tags.detail_tag(test.pk))
    except Exception:
        upload.file.delete(save=False)
        raise
    return ExportResult(upload_id=upload.pk, file_name=file_name, row_count=upload.row_count)
