"""Export a test as a denormalized ZIP (DESIGN §3 "export") and read it back for download.

The ZIP holds ``runs.csv`` (one row per run, with its latest invocation and that invocation's
current grade), ``turns.csv`` (one row per replay step, in run and turn order) and
``manifest.json`` (what the files hold and how many rows; written last, once they are counted).

Memory stays bounded whatever the size of the test: rows are streamed from the database and
handed to zipstream-ng in pieces of about 64 KiB, which it compresses as they come into a
temporary file, which then goes to Django's storage. The file is written outside any transaction
(it can take a while); only the Upload row is created in one.

Two ways to produce the same bytes: on PostgreSQL the database writes the CSV records itself
(``COPY (SELECT ...) TO STDOUT WITH (FORMAT csv)``, every cell already formatted as Python would
write it), which is several times faster than building Python values for 400k rows and writing
them one by one; elsewhere (the embedded SQLite default) plain column values go through the csv
module. A test checks that both write byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

import zipstream
from django.contrib.auth import get_user_model
from django.core.files import File
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from tests_app import cache_tags
from tests_app.actors import Actor, display_name
from tests_app.models import (
    BenchmarkEntry,
    Grade,
    ReplayStep,
    Test,
    TestInvocation,
    TestRun,
    Upload,
)
from tests_app.selectors import scope

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK_SIZE = 2000
# CSV text is handed to the ZIP writer in pieces of about this size.
BUFFER_BYTES = 64 * 1024
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
    # The same for every run of the test: what it ran against (name and id of the target, the
    # model of the snapshot taken at start).
    "target_id",
    "target_name",
    "model",
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


class _Counter:
    def __init__(self) -> None:
        self.rows: dict[str, int] = {}


def _header(columns: list[str]) -> str:
    line = io.StringIO()
    csv.writer(line).writerow(columns)
    return line.getvalue()


# --- the portable way: column values through the csv module ---------------------------------


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


def _csv_rows(
    name: str, columns: list[str], rows: Iterable[Sequence[Any]], counter: _Counter
) -> Iterator[bytes]:
    # One zipstream chunk per row costs more in the ZIP writer than the row itself; a bounded
    # buffer keeps memory flat all the same.
    buffer = io.StringIO()
    buffer.write(_header(columns))
    writer = csv.writer(buffer)
    counter.rows[name] = 0
    for row in rows:
        writer.writerow([_cell(value) for value in row])
        counter.rows[name] += 1
        if buffer.tell() >= BUFFER_BYTES:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def _person(first_name: str | None, last_name: str | None, username: str | None) -> str:
    # actors.display_name(user) from the three columns it reads, without building the user.
    if username is None:
        return ""
    return f"{first_name} {last_name}".strip() or username


def _current_grades(invocation_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
    """The current grade of each invocation: the newest done one, else the newest of any status
    (pending or failed), so that the export shows that grading was attempted."""
    grades: dict[uuid.UUID, tuple[Any, ...]] = {}
    done: set[uuid.UUID] = set()
    if not invocation_ids:
        return grades
    rows = (
        Grade.objects.filter(invocation_id__in=invocation_ids)
        .order_by("-created_at")
        .values_list(
            "invocation_id", "id", "source", "status", "score", "passed", "feedback", "created_at"
        )
    )
    for invocation_id, *grade in rows:
        is_done = grade[2] == Grade.Status.DONE
        if invocation_id not in grades or (is_done and invocation_id not in done):
            grades[invocation_id] = tuple(grade)
        if is_done:
            done.add(invocation_id)
    return grades


_NO_INVOCATION: tuple[None, ...] = (None,) * 8
_NO_GRADE: tuple[None, ...] = (None,) * 7


def _run_rows(test: Test) -> Iterator[tuple[Any, ...]]:
    # Column values rather than model instances with their related rows.
    runs = (
        TestRun.objects.filter(test=test)
        .order_by("cycle", "ordinal")
        .values_list(
            "id",
            "cycle",
            "ordinal",
            "status",
            "attempts",
            "entry_id",
            "entry__position",
            "entry__title",
            "entry__turns",
            "latest_invocation_id",
            "latest_invocation__status",
            "latest_invocation__client",
            "latest_invocation__actor__first_name",
            "latest_invocation__actor__last_name",
            "latest_invocation__actor__username",
            "latest_invocation__started_at",
            "latest_invocation__ended_at",
            "latest_invocation__steps_count",
            "latest_invocation__error",
        )
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for batch in _batched(runs, CHUNK_SIZE):
        # One grade query per chunk of runs, not one per run.
        grades = _current_grades([run[9] for run in batch if run[9] is not None])
        for run in batch:
            invocation_id = run[9]
            if invocation_id is None:
                invocation: tuple[Any, ...] = _NO_INVOCATION
                grade: tuple[Any, ...] = _NO_GRADE
            else:
                first_name, last_name, username = run[12:15]
                actor_name = _person(first_name, last_name, username)
                invocation = (*run[9:12], actor_name, *run[15:19])
                grade = grades.get(invocation_id, _NO_GRADE)
            yield (test.pk, *run[:9], *invocation, *grade, *_target_cells(test))


def _target_cells(test: Test) -> tuple[Any, ...]:
    return (test.target_id, test.target.name, (test.target_snapshot or {}).get("model") or None)


def _turn_rows(test: Test) -> Iterator[tuple[Any, ...]]:
    steps = (
        ReplayStep.objects.filter(invocation__test=test)
        .order_by(
            "invocation__run__cycle",
            "invocation__run__ordinal",
            "invocation__created_at",
            "turn",
        )
        .values_list(
            "invocation__run_id",
            "invocation__run__cycle",
            "invocation__run__ordinal",
            "invocation_id",
            "invocation__status",
            "turn",
            "input",
            "output",
            "reference",
            "latency_ms",
            "prompt_tokens",
            "completion_tokens",
            "error",
            "created_at",
        )
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for step in steps:
        yield (test.pk, *step)


# --- on PostgreSQL: the database writes the records -------------------------------------------


def _column(alias: str, name: str) -> sql.Composable:
    return sql.Identifier(alias, name)


def _iso(column: sql.Composable) -> sql.Composable:
    # datetime.isoformat() of the UTC value (Django's connections run in UTC), which leaves out
    # the fraction when it is zero.
    return sql.SQL(
        "replace(to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '')"
        " || '+00:00'"
    ).format(column)


def _text(column: sql.Composable) -> sql.Composable:
    # COPY quotes an empty string ("") where the csv module writes nothing; NULL is written as
    # nothing by both.
    return sql.SQL("NULLIF({}, '')").format(column)


def _flag(column: sql.Composable) -> sql.Composable:
    return sql.SQL("CASE WHEN {0} THEN 'true' WHEN NOT {0} THEN 'false' END").format(column)


def _float(column: sql.Composable) -> sql.Composable:
    # Both write the shortest text that reads back as the same float, but Python adds ".0" to a
    # whole number: repr(1.0) == "1.0" where PostgreSQL writes "1".
    return sql.SQL("CASE WHEN {0} = trunc({0}) THEN {0}::text || '.0' ELSE {0}::text END").format(
        column
    )


def _actor_names(test: Test) -> tuple[list[str], list[str | None]]:
    """Display names of the test's actors, computed by actors.display_name itself (few people run
    one test), to be joined into the runs query. An empty name is NULL, as in _text."""
    actor_ids = (
        TestInvocation.objects.filter(test=test, actor__isnull=False)
        .order_by()
        .values_list("actor_id", flat=True)
        .distinct()
    )
    users = list(get_user_model().objects.filter(pk__in=actor_ids))
    return [str(user.pk) for user in users], [display_name(user) or None for user in users]


_RUNS_SQL = """
SELECT r.test_id::text, r.id::text, r.cycle, r.ordinal, r.status, r.attempts,
       r.entry_id::text, e.position, {entry_title}, e.turns,
       i.id::text, i.status, i.client, actor.name, {started_at}, {ended_at}, i.steps_count,
       {invocation_error},
       g.id::text, g.source, g.status, {score}, {passed}, {feedback}, {graded_at},
       {target_id}, {target_name}, {model}
FROM {runs} r
JOIN {entries} e ON e.id = r.entry_id
LEFT JOIN {invocations} i ON i.id = r.latest_invocation_id
LEFT JOIN unnest({actor_ids}::text[], {actor_names}::text[]) AS actor (id, name)
    ON actor.id = i.actor_id::text
LEFT JOIN LATERAL (
    -- The current grade, as in _current_grades: the newest done one, else the newest of any.
    SELECT * FROM {grades} grade
    WHERE grade.invocation_id = i.id
    ORDER BY grade.status = 'done' DESC, grade.created_at DESC
    LIMIT 1
) g ON true
WHERE r.test_id = {test_id}
ORDER BY r.cycle, r.ordinal
"""

_TURNS_SQL = """
SELECT i.test_id::text, r.id::text, r.cycle, r.ordinal, i.id::text, i.status, s.turn,
       {input}, {output}, {reference}, s.latency_ms, s.prompt_tokens, s.completion_tokens,
       {error}, {created_at}
FROM {steps} s
JOIN {invocations} i ON i.id = s.invocation_id
JOIN {runs} r ON r.id = i.run_id
WHERE i.test_id = {test_id}
ORDER BY r.cycle, r.ordinal, i.created_at, s.turn
"""


def _runs_query(test: Test) -> sql.Composable:
    actor_ids, actor_names = _actor_names(test)
    target_id, target_name, model = _target_cells(test)
    return sql.SQL(_RUNS_SQL).format(
        entry_title=_text(_column("e", "title")),
        started_at=_iso(_column("i", "started_at")),
        ended_at=_iso(_column("i", "ended_at")),
        invocation_error=_text(_column("i", "error")),
        score=_float(_column("g", "score")),
        passed=_flag(_column("g", "passed")),
        feedback=_text(_column("g", "feedback")),
        graded_at=_iso(_column("g", "created_at")),
        target_id=sql.Literal(str(target_id)),
        target_name=_text(sql.Literal(target_name)),
        model=_text(sql.Literal(model or "")),
        runs=sql.Identifier(TestRun._meta.db_table),
        entries=sql.Identifier(BenchmarkEntry._meta.db_table),
        invocations=sql.Identifier(TestInvocation._meta.db_table),
        grades=sql.Identifier(Grade._meta.db_table),
        actor_ids=sql.Literal(actor_ids),
        actor_names=sql.Literal(actor_names),
        test_id=sql.Literal(str(test.pk)),
    )


def _turns_query(test: Test) -> sql.Composable:
    return sql.SQL(_TURNS_SQL).format(
        input=_text(_column("s", "input")),
        output=_text(_column("s", "output")),
        reference=_text(_column("s", "reference")),
        error=_text(_column("s", "error")),
        created_at=_iso(_column("s", "created_at")),
        steps=sql.Identifier(ReplayStep._meta.db_table),
        invocations=sql.Identifier(TestInvocation._meta.db_table),
        runs=sql.Identifier(TestRun._meta.db_table),
        test_id=sql.Literal(str(test.pk)),
    )


def _copied_rows(
    name: str, columns: list[str], query: sql.Composable, counter: _Counter
) -> Iterator[bytes]:
    """The records of ``COPY (query) TO STDOUT`` in pieces of about BUFFER_BYTES.

    Each read of a COPY gives exactly one record, ending with a newline; the csv module ends
    records with CRLF (newlines inside quoted cells are kept as they are by both), so only the
    last byte changes.
    """
    pieces = [_header(columns).encode("utf-8")]
    size = 0
    rows = 0
    counter.rows[name] = 0
    statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query)
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for record in copy:
            pieces.append(bytes(record[:-1]))
            pieces.append(b"\r\n")
            size += len(record) + 1
            rows += 1
            if size >= BUFFER_BYTES:
                counter.rows[name] = rows
                yield b"".join(pieces)
                pieces.clear()
                size = 0
    counter.rows[name] = rows
    yield b"".join(pieces)


def _csv_files(test: Test, counter: _Counter, *, use_copy: bool) -> list[tuple[str, Any]]:
    if use_copy:
        return [
            ("runs.csv", _copied_rows("runs.csv", RUN_COLUMNS, _runs_query(test), counter)),
            ("turns.csv", _copied_rows("turns.csv", TURN_COLUMNS, _turns_query(test), counter)),
        ]
    return [
        ("runs.csv", _csv_rows("runs.csv", RUN_COLUMNS, _run_rows(test), counter)),
        ("turns.csv", _csv_rows("turns.csv", TURN_COLUMNS, _turn_rows(test), counter)),
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
            # The target's id and current name, and its configuration as the test ran it.
            "target": {
                "id": str(test.target_id),
                "name": test.target.name,
                "snapshot": test.target_snapshot,
            },
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
            "benchmark", "eval__rubric", "department", "target", "created_by"
        ),
    )
    exported_at = timezone.now()
    counter = _Counter()
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_DEFLATED, sized=False)
    for name, pieces in _csv_files(test, counter, use_copy=connection.vendor == "postgresql"):
        archive.add(pieces, name)
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
