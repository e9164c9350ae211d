"""start: create a Test and its first cycle of runs (DESIGN §3 "start")."""

from __future__ import annotations

import uuid

from django.db import transaction

from tests_app.actors import Actor
from tests_app.errors import NotFound, ValidationFailed
from tests_app.models import Benchmark, BenchmarkEntry, Target, Test, TestRun
from tests_app.selectors.scope import require_operator, visible_benchmarks, visible_targets
from tests_app.targets.records import snapshot_of


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


def _target_for_start(*, actor: Actor, benchmark: Benchmark, target_id: uuid.UUID | None) -> Target:
    if target_id is None:
        return benchmark.default_target
    target = visible_targets(actor.user).filter(pk=target_id).first()
    if target is None:
        raise NotFound("No target with that id is visible to you.")
    if target.department_id != benchmark.eval.department_id:
        # Whoever may see the test must be able to see what it ran against.
        raise ValidationFailed(
            f"The target {target.name!r} belongs to another department than the benchmark; "
            "choose a target of the benchmark's department.",
            code="target_department_mismatch",
            fields={"target_id": ["Must be a target of the benchmark's department."]},
        )
    return target


def start_test(
    *,
    actor: Actor,
    benchmark_id: uuid.UUID,
    infinite_mode: bool = False,
    target_id: uuid.UUID | None = None,
) -> Test:
    """Create a pending Test of ``benchmark_id`` with its first cycle of runs, in one transaction,
    against ``target_id`` or else the benchmark's default target; the test keeps a snapshot of
    the target's configuration as it is now.

    Raises NotFound for a benchmark or target the caller cannot see, PermissionDenied for a
    viewer and ValidationFailed for a benchmark without entries or a target of another
    department.
    """
    benchmark = (
        visible_benchmarks(actor.user)
        .select_related("eval", "default_target")
        .filter(pk=benchmark_id)
        .first()
    )
    if benchmark is None:
        raise NotFound("No benchmark with that id is visible to you.")
    require_operator(
        user=actor.user, department_id=benchmark.eval.department_id, what="this benchmark"
    )
    target = _target_for_start(actor=actor, benchmark=benchmark, target_id=target_id)
    with transaction.atomic():
        test = Test.objects.create(
            benchmark=benchmark,
            eval=benchmark.eval,
            department_id=benchmark.eval.department_id,
            target=target,
            target_snapshot=snapshot_of(target),
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
