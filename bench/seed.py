"""Fast seeding: PostgreSQL COPY through psycopg in batches, plus a small world made by the ORM.

Rows are written in COPY's text format, built from the models' own field lists: a column the
caller does not give gets the field's default (or NULL), so a field added to a model later does
not break the bench. Large sets go in batches of one transaction each, so memory stays flat and
a failure leaves whole batches behind, never half rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import psycopg
from django.db import models
from django.utils import timezone

BATCH_ROWS = 50_000


def plain_text(value: Any) -> str | None:
    """One value as PostgreSQL parses it from text (None stays NULL)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float | uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def copy_text(value: Any) -> str:
    """One value in COPY's text format."""
    text = plain_text(value)
    if text is None:
        return "\\N"
    if any(character in text for character in "\\\t\n\r"):
        text = (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


class CopyTable:
    """A line builder for one model: constants rendered once, per-row values slotted in."""

    def __init__(
        self, model: type[models.Model], *, variables: Sequence[str], constants: dict[str, Any]
    ) -> None:
        self.table = model._meta.db_table
        fields = list(model._meta.concrete_fields)
        known = {f.attname for f in fields}
        unknown = (set(variables) | set(constants)) - known
        if unknown:
            raise ValueError(f"{model.__name__} has no fields {sorted(unknown)}")
        # A concrete field always has a column; the stubs type it for any field.
        self.columns = [cast(str, f.column) for f in fields]
        self.template: list[str] = []
        self.plain: list[str | None] = []
        self.slots: list[int] = []
        now = timezone.now()
        for position, model_field in enumerate(fields):
            name = model_field.attname
            if name in variables:
                self.template.append("")
                self.plain.append(None)
                self.slots.append(position)
                continue
            if name in constants:
                value = constants[name]
            elif getattr(model_field, "auto_now", False) or getattr(
                model_field, "auto_now_add", False
            ):
                value = now
            else:
                # Django's own default: the declared one, "" for blank text, else None.
                value = model_field.get_default()
                if value is None and not model_field.null:
                    raise ValueError(f"{model.__name__}.{name} needs a value")
            self.template.append(copy_text(value))
            self.plain.append(plain_text(value))
        # The slots must follow the order in which the caller passes the values.
        order = {name: index for index, name in enumerate(variables)}
        self.slots.sort(key=lambda position: order[fields[position].attname])

    def line(self, *values: Any) -> str:
        cells = self.template.copy()
        for position, value in zip(self.slots, values, strict=True):
            cells[position] = value if isinstance(value, str) else copy_text(value)
        return "\t".join(cells) + "\n"

    def statement(self) -> str:
        return f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN"

    def insert_statement(self) -> str:
        """An INSERT of one row whose parameters are :meth:`parameters` (text, typed by the
        server from the column, as psycopg sends str values untyped)."""
        placeholders = ", ".join(["%s"] * len(self.columns))
        return f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES ({placeholders})"

    def parameters(self, *values: Any) -> list[str | None]:
        cells = self.plain.copy()
        for position, value in zip(self.slots, values, strict=True):
            cells[position] = plain_text(value)
        return cells


def copy_lines(connection: psycopg.Connection[Any], table: CopyTable, lines: Iterable[str]) -> int:
    """COPY the lines into the table in the current transaction; returns how many were sent."""
    count = 0
    with connection.cursor() as cursor, cursor.copy(table.statement()) as copy:
        buffer: list[str] = []
        for line in lines:
            buffer.append(line)
            count += 1
            if len(buffer) >= 10_000:
                copy.write("".join(buffer))
                buffer.clear()
        if buffer:
            copy.write("".join(buffer))
    return count


def batched(total: int, size: int = BATCH_ROWS) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(total, start + size))


@dataclass
class World:
    """The small, ORM-made part of the data: departments, evals, benchmarks, users, keys."""

    staff_key: str
    operator_key: str
    staff_id: int
    operator_id: int
    department_ids: list[uuid.UUID]
    # (benchmark id, eval id, department id) for each benchmark of the search data.
    search_benchmarks: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]
    # The targets of each department (its reference target first) and the snapshot a test of
    # each keeps.
    department_targets: dict[uuid.UUID, list[uuid.UUID]]
    target_snapshots: dict[uuid.UUID, dict[str, Any]]


def conversation(turns: int, *, tag: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for turn in range(1, turns + 1):
        messages.append({"role": "user", "content": f"{tag}: question {turn}?"})
        messages.append({"role": "assistant", "content": f"{tag}: answer {turn}."})
    return messages


def make_target(*, department_id: uuid.UUID, config: dict[str, Any], name: str = "") -> Any:
    """A target row of the department with the settings of a target JSON (``{"kind": ...}``)."""
    from tests_app.models import Target

    settings = {key: value for key, value in config.items() if key != "kind"}
    kind = config.get("kind", "reference")
    # Unique within the department: scenarios make several benchmarks in one department.
    label = name or f"{settings.get('model') or 'Reference'} {uuid.uuid4().hex[:6]}"
    return Target.objects.create(department_id=department_id, kind=kind, name=label, **settings)


def make_world(*, departments: int = 10, evals_per_department: int = 4) -> World:
    from django.contrib.auth import get_user_model

    from tests_app.models import (
        ApiKey,
        Benchmark,
        BenchmarkEntry,
        Department,
        Eval,
        Membership,
        Rubric,
    )
    from tests_app.services.targets import reference_target
    from tests_app.targets.records import snapshot_of

    user_model = get_user_model()
    staff = user_model.objects.create_user(
        username="bench-staff", is_staff=True, is_superuser=True, password=None
    )
    operator = user_model.objects.create_user(
        username="bench-operator", first_name="Bench", last_name="Operator", password=None
    )
    rubric = Rubric.objects.create(
        name="Bench rubric",
        criteria=[{"name": "accuracy", "description": "Facts are right.", "weight": 1}],
        pass_threshold=0.5,
    )
    department_ids: list[uuid.UUID] = []
    search_benchmarks: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = []
    department_targets: dict[uuid.UUID, list[uuid.UUID]] = {}
    target_snapshots: dict[uuid.UUID, dict[str, Any]] = {}
    for department_number in range(1, departments + 1):
        department = Department.objects.create(
            name=f"Bench department {department_number:02d}", slug=f"bench-{department_number:02d}"
        )
        department_ids.append(department.pk)
        # Two targets per department, so that search's target facet has a choice.
        targets = [
            reference_target(department=department),
            make_target(
                department_id=department.pk,
                name=f"Bench model {department_number:02d}",
                config={"kind": "openai", "model": f"bench-model-{department_number:02d}"},
            ),
        ]
        department_targets[department.pk] = [target.pk for target in targets]
        target_snapshots.update({target.pk: snapshot_of(target) for target in targets})
        Membership.objects.create(
            user=operator, department=department, role=Membership.Role.OPERATOR
        )
        for eval_number in range(1, evals_per_department + 1):
            evaluation = Eval.objects.create(
                name=f"Eval {department_number:02d}-{eval_number}",
                description="What the bench measures.",
                department=department,
                rubric=rubric,
            )
            benchmark = Benchmark.objects.create(
                name=f"Search benchmark {department_number:02d}-{eval_number}",
                eval=evaluation,
                default_target=targets[0],
            )
            BenchmarkEntry.objects.create(
                benchmark=benchmark,
                position=1,
                title="Only entry",
                messages=conversation(1, tag="s"),
            )
            search_benchmarks.append((benchmark.pk, evaluation.pk, department.pk))
    _, staff_key = ApiKey.objects.create_key(user=staff, name="bench staff")
    _, operator_key = ApiKey.objects.create_key(user=operator, name="bench operator")
    return World(
        staff_key=staff_key,
        operator_key=operator_key,
        staff_id=staff.pk,
        operator_id=operator.pk,
        department_ids=department_ids,
        search_benchmarks=search_benchmarks,
        department_targets=department_targets,
        target_snapshots=target_snapshots,
    )


def make_benchmark(
    *,
    department_id: uuid.UUID,
    name: str,
    entries: int,
    turns: int,
    target: dict[str, Any],
    runs_per_entry: int = 1,
) -> Any:
    """A benchmark of ``entries`` conversations of ``turns`` user turns each (bulk-created),
    whose default target is a new target of the department with the settings of ``target``."""
    from tests_app.models import Benchmark, BenchmarkEntry, Eval, Rubric

    evaluation = Eval.objects.create(
        name=f"{name} eval",
        description="Bench scenario.",
        department_id=department_id,
        rubric=Rubric.objects.get(name="Bench rubric"),
    )
    benchmark = Benchmark.objects.create(
        name=name,
        eval=evaluation,
        default_target=make_target(department_id=department_id, config=target),
        runs_per_entry=runs_per_entry,
    )
    rows = []
    for position in range(1, entries + 1):
        messages = conversation(turns, tag=f"e{position}")
        # bulk_create skips save(), which is what keeps the turn count: set it here.
        rows.append(
            BenchmarkEntry(
                benchmark=benchmark,
                position=position,
                title=f"Conversation {position}",
                messages=messages,
                turns=turns,
            )
        )
    BenchmarkEntry.objects.bulk_create(rows, batch_size=1000)
    return benchmark


def timed_batches(
    connection: psycopg.Connection[Any],
    total: int,
    write_batch: Callable[[range], None],
    *,
    size: int = BATCH_ROWS,
) -> None:
    """Call ``write_batch`` for each slice of ``range(total)``, committing after each one."""
    for rows in batched(total, size):
        write_batch(rows)
        connection.commit()


def seed_finished_test(
    *,
    connection: psycopg.Connection[Any],
    world: World,
    department_id: uuid.UUID,
    name: str,
    runs: int,
    steps_per_run: int,
    entries: int = 1000,
    pending: int = 0,
    benchmark: Any = None,
    outcome: Callable[[int], tuple[float, bool]] | None = None,
    latency_ms: Callable[[int], int] | None = None,
    target: Any = None,
) -> uuid.UUID:
    """A graded test of ``runs`` runs, each with one ended invocation, its steps and one agent
    grade, written with COPY (runs and invocations point at each other: the foreign keys are
    deferred to commit, so each batch holds both sides). With ``pending``, the last runs are
    still pending and the test is running; otherwise it is completed.

    ``benchmark``: a benchmark made by make_benchmark to test (else a new one of ``entries``
    entries); ``outcome(index)``: the (score, passed) of the run at that index (else 0.9 and
    passed for even indexes, 0.3 and failed for odd ones); ``latency_ms(index)``: of its turns
    (else 50); ``target``: what it ran against (else the benchmark's default target)."""
    from tests_app.models import Grade, ReplayStep, Test, TestInvocation, TestRun
    from tests_app.targets.records import snapshot_of

    if benchmark is None:
        entries = min(entries, runs)
        benchmark = make_benchmark(
            department_id=department_id,
            name=name,
            entries=entries,
            turns=steps_per_run,
            target={"kind": "reference"},
            runs_per_entry=max(1, runs // entries),
        )
    else:
        entries = benchmark.entries.count()

    def default_outcome(index: int) -> tuple[float, bool]:
        return (0.9, True) if index % 2 == 0 else (0.3, False)

    outcome = outcome or default_outcome
    outcomes = [outcome(index) for index in range(runs - pending)]
    entry_ids = [
        str(pk) for pk in benchmark.entries.order_by("position").values_list("pk", flat=True)
    ]
    now = timezone.now()
    done = runs - pending
    test = Test.objects.create(
        benchmark=benchmark,
        eval=benchmark.eval,
        department_id=department_id,
        target=target or benchmark.default_target,
        target_snapshot=snapshot_of(target or benchmark.default_target),
        status=Test.Status.RUNNING if pending else Test.Status.COMPLETED,
        created_by_id=world.operator_id,
        started_at=now,
        finished_at=None if pending else now,
        total_runs=runs,
        completed_runs=done,
        graded_runs=done,
        passed_runs=sum(passed for _, passed in outcomes),
        score_sum=sum(score for score, _ in outcomes),
    )
    test_id = str(test.pk)
    first_created = now - timedelta(milliseconds=runs)
    run_table = CopyTable(
        TestRun,
        variables=[
            "id",
            "created_at",
            "entry_id",
            "ordinal",
            "latest_invocation_id",
            "score",
            "passed",
            "status",
            "attempts",
        ],
        constants={"test_id": test_id, "cycle": 1},
    )
    invocation_table = CopyTable(
        TestInvocation,
        variables=["id", "created_at", "run_id"],
        constants={
            "test_id": test_id,
            "status": "ended",
            "client": "agent",
            "actor_id": world.operator_id,
            "started_at": now,
            "ended_at": now,
            "heartbeat_at": now,
            "steps_count": steps_per_run,
        },
    )
    step_table = CopyTable(
        ReplayStep,
        variables=[
            "id",
            "created_at",
            "invocation_id",
            "turn",
            "input",
            "output",
            "reference",
            "latency_ms",
        ],
        constants={"prompt_tokens": 40, "completion_tokens": 12},
    )
    grade_table = CopyTable(
        Grade,
        variables=["id", "created_at", "invocation_id", "score", "passed"],
        constants={
            "source": "agent",
            "status": "done",
            "feedback": "Matches the reference on the facts; a little terse.",
            "actor_id": world.operator_id,
        },
    )
    for rows in batched(runs, 20_000):
        run_lines, invocation_lines, step_lines, grade_lines = [], [], [], []
        for index in rows:
            run_id, invocation_id = str(uuid.uuid4()), str(uuid.uuid4())
            # Distinct, increasing times as a real test has them (ties would skew sorts).
            created = (first_created + timedelta(milliseconds=index)).isoformat()
            if index >= done:
                run_lines.append(
                    run_table.line(
                        run_id,
                        created,
                        entry_ids[index % entries],
                        str(index + 1),
                        None,
                        None,
                        None,
                        "pending",
                        "0",
                    )
                )
                continue
            score, passed = str(outcomes[index][0]), outcomes[index][1]
            run_lines.append(
                run_table.line(
                    run_id,
                    created,
                    entry_ids[index % entries],
                    str(index + 1),
                    invocation_id,
                    score,
                    "t" if passed else "f",
                    "completed",
                    "1",
                )
            )
            invocation_lines.append(invocation_table.line(invocation_id, created, run_id))
            grade_lines.append(
                grade_table.line(
                    str(uuid.uuid4()), created, invocation_id, score, "t" if passed else "f"
                )
            )
            for turn in range(1, steps_per_run + 1):
                step_lines.append(
                    step_table.line(
                        str(uuid.uuid4()),
                        created,
                        invocation_id,
                        str(turn),
                        f"e{index % entries + 1}: question {turn}?",
                        f"Echo: e{index % entries + 1}: question {turn}? An answer of a few words.",
                        f"e{index % entries + 1}: answer {turn}.",
                        str(latency_ms(index) if latency_ms else 50),
                    )
                )
        copy_lines(connection, run_table, run_lines)
        copy_lines(connection, invocation_table, invocation_lines)
        copy_lines(connection, step_table, step_lines)
        copy_lines(connection, grade_table, grade_lines)
        connection.commit()
    with connection.cursor() as cursor:
        for table in ("testrun", "testinvocation", "replaystep", "grade"):
            cursor.execute(f"ANALYZE tests_app_{table}")
    connection.commit()
    return test.pk
