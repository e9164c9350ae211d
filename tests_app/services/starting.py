"""start: create a Test and its first cycle of runs (DESIGN §3 "start")."""

from __future__ import annotations

import uuid

from django.db import transaction

from tests_app.actors import Actor
from tests_app.errors import NotFound, ValidationFailed
from tests_app.models import Benchmark, BenchmarkEntry, Test, TestRun
from tests_app.selectors.scope import require_operator, visible_benchmarks


def build_cycle_runs(*, test: Test, benchmark: Benchmark, cycle: int) -> list[TestRun]:
    """Create one cycle of runs (entries times runs_per_entry) and return them in ordinal order.

    Every entry is run once before any entry is run a second time, so a partly finished cycle
    already covers the whole benchmark. The caller owns the transaction.
    """
    entry_ids = list(
        BenchmarkEntry.objects.filter(benchmark=benchmark)
        .order_by("position")
        .values_list("pk", flat=True)
    )
    runs = [
        TestRun(test=test, entry_id=entry_id, cycle=cycle, ordinal=ordinal)
        for ordinal, entry_id in enumerate(
            (entry_id for _ in range(benchmark.runs_per_entry) for entry_id in entry_ids),
            start=1,
        )
    ]
    return TestRun.objects.bulk_create(runs)


def start_test(*, actor: Actor, benchmark_id: uuid.UUID, infinite_mode: bool = False) -> Test:
    """Create a pending Test of ``benchmark_id`` with its first cycle of runs, in one transaction.

    Raises NotFound for a benchmark the caller cannot see, PermissionDenied for a viewer and
    ValidationFailed for a benchmark without entries.
    """
    benchmark = (
        visible_benchmarks(actor.user).select_related("eval").filter(pk=benchmark_id).first()
    )
    if benchmark is None:
        raise NotFound("No benchmark with that id is visible to you.")
    require_operator(
        user=actor.user, department_id=benchmark.eval.department_id, what="this benchmark"
    )
    with transaction.atomic():
        test = Test.objects.create(
            benchmark=benchmark,
            eval=benchmark.eval,
            department_id=benchmark.eval.department_id,
            infinite_mode=infinite_mode,
            created_by=actor.user,
        )
        runs = build_cycle_runs(test=test, benchmark=benchmark, cycle=1)
        if not runs:
            # Raising inside the block rolls the empty test back.
            raise ValidationFailed(
                "The benchmark has no entries, so a test of it would have nothing to run: "
                "add entries first.",
                code="benchmark_empty",
            )
        test.total_runs = len(runs)
        test.save(update_fields=["total_runs", "updated_at"])
    return test
