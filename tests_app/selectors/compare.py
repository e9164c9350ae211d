"""compare: 2 to 5 tests of one benchmark, entry by entry, with paired statistics.

The first test is the baseline, the others are candidates. Each test is read as its status
summary reads it (every run, or its current cycle's in infinite mode), summed per entry: runs,
graded runs, runs with a verdict, passed runs and the sum of scores. What is computed from those
(docs/compare.md explains it for people; ``tests_app.figures`` holds the statistics):

* per test, the figures of get's status_summary;
* per candidate, over the entries graded in both it and the baseline: the mean of the per-entry
  differences of mean score with a paired bootstrap interval and a Wilcoxon signed-rank p-value,
  the mean difference of pass rates, how many entries regressed, improved or did not change, and
  McNemar's exact test of the entries whose verdict (passed in most graded runs) flipped;
* per entry, its change for the first candidate: ``regression`` when its pass rate drops,
  ``improvement`` when it rises, ``unchanged`` otherwise; when one side has no verdict at all, a
  mean score drop (rise) by more than SCORE_MARGIN; ``incomplete`` when either test has no graded
  run of the entry.

Queries are bounded whatever the size of the tests: the tests, their per-entry sums (one row per
test and entry), their turn counts, and for the page of entries their titles and invocations.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce

from tests_app import figures
from tests_app.errors import NotFound, ValidationFailed
from tests_app.models import BenchmarkEntry, ReplayStep, Test, TestRun
from tests_app.selectors import scope
from tests_app.selectors.test_detail import target_summary
from tests_app.selectors.test_figures import (
    figures_of_test,
    step_histograms,
    summarized_runs,
    test_index,
)

MIN_TESTS = 2
MAX_TESTS = 5
PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 500
# On the 0..1 score scale: a mean score change this small is not a regression or an improvement
# of an entry that has no verdict (docs/compare.md).
SCORE_MARGIN = 0.05
ONLY_CHOICES = ("regressions", "improvements", "changed")
ORDER_CHOICES = ("position", "delta")

Change = Literal["regression", "improvement", "unchanged", "incomplete"]
REGRESSION, IMPROVEMENT, UNCHANGED, INCOMPLETE = 0, 1, 2, 3
CHANGE_NAMES: tuple[Change, ...] = ("regression", "improvement", "unchanged", "incomplete")
ONLY_CODES = {
    "regressions": (REGRESSION,),
    "improvements": (IMPROVEMENT,),
    "changed": (REGRESSION, IMPROVEMENT),
}


@dataclass(frozen=True)
class Comparison:
    """The answer of compare, as plain data (ids are UUIDs)."""

    baseline_test_id: uuid.UUID
    benchmark_id: uuid.UUID
    tests: list[dict[str, Any]]
    deltas: list[dict[str, Any]]
    entries: list[dict[str, Any]]
    total_entries: int


@dataclass
class _PerEntry:
    """One test's sums per entry, aligned on the compared entries' positions."""

    runs: np.ndarray
    graded: np.ndarray
    verdicts: np.ndarray
    passed: np.ndarray
    score_sum: np.ndarray

    @property
    def mean_score(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.graded > 0, self.score_sum / self.graded, np.nan)

    @property
    def pass_rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.verdicts > 0, self.passed / self.verdicts, np.nan)


def _visible_tests(*, user: Any, test_ids: list[uuid.UUID]) -> list[Test]:
    if not MIN_TESTS <= len(test_ids) <= MAX_TESTS:
        raise ValidationFailed(
            f"Compare {MIN_TESTS} to {MAX_TESTS} tests: a baseline and 1 to "
            f"{MAX_TESTS - 1} candidates.",
            code="invalid",
            fields={"test_ids": [f"Give {MIN_TESTS} to {MAX_TESTS} test ids."]},
        )
    if len(set(test_ids)) != len(test_ids):
        raise ValidationFailed(
            "A test appears twice in test_ids; compare each test once.",
            code="invalid",
            fields={"test_ids": ["Each id at most once."]},
        )
    found = {
        test.pk: test
        for test in scope.visible_tests(user)
        .select_related("benchmark", "target")
        .filter(pk__in=test_ids)
    }
    for test_id in test_ids:
        if test_id not in found:
            # The same answer for a test that does not exist and one of another department.
            raise NotFound(f"No test with id {test_id} is visible to you.")
    tests = [found[test_id] for test_id in test_ids]
    if len({test.benchmark_id for test in tests}) > 1:
        raise ValidationFailed(
            "The tests belong to different benchmarks; compare tests of one benchmark.",
            code="different_benchmarks",
            fields={"test_ids": ["All tests must be of the same benchmark."]},
        )
    return tests


def oldest_first(*, user: Any, test_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """``test_ids`` with the oldest visible test first (ids it cannot see keep their place last,
    for compare to refuse)."""
    created = dict(
        scope.visible_tests(user).filter(pk__in=test_ids).values_list("pk", "created_at")
    )
    missing = [pk for pk in test_ids if pk not in created]
    return sorted(created, key=created.__getitem__) + missing


def other_tests(*, user: Any, test: Test, limit: int) -> list[dict[str, Any]]:
    """The newest other tests of ``test``'s benchmark that the user may see: what it can be
    compared with."""
    rows = (
        scope.visible_tests(user)
        .filter(benchmark_id=test.benchmark_id)
        .exclude(pk=test.pk)
        .order_by("-created_at")
        .values_list("pk", "created_at", "status", "target__name", "target_snapshot__model")[:limit]
    )
    return [
        {
            "id": pk,
            "created_at": created_at,
            "status": status,
            "target_name": target_name,
            "model": model if isinstance(model, str) else "",
        }
        for pk, created_at, status, target_name, model in rows
    ]


def _per_entry(tests: list[Test]) -> tuple[np.ndarray, list[_PerEntry]]:
    """The positions of every entry any test ran, sorted, and each test's sums aligned on them.

    One query for all the tests, grouped by test and entry position, read as plain numbers: the
    test's index in ``tests``, the position, runs, graded, verdicts, passed and the score sum.
    """
    condition = Q()
    for test in tests:
        condition |= summarized_runs(test)
    graded_runs = Q(score__isnull=False)
    rows = list(
        TestRun.objects.filter(condition)
        .order_by()
        .annotate(test_index=test_index(tests))
        .values_list("test_index", "entry__position")
        .annotate(
            runs=Count("pk"),
            graded=Count("pk", filter=graded_runs),
            verdicts=Count("pk", filter=graded_runs & Q(passed__isnull=False)),
            passed=Count("pk", filter=graded_runs & Q(passed=True)),
            score_sum=Coalesce(Sum("score"), 0.0),
        )
    )
    table = np.array(rows, dtype=float).reshape(-1, 7)
    positions = np.unique(table[:, 1]).astype(np.int64)
    per_test = []
    for index in range(len(tests)):
        mine = table[table[:, 0] == index]
        slots = np.searchsorted(positions, mine[:, 1].astype(np.int64))
        columns = []
        for column in range(2, 7):
            values = np.zeros(len(positions))
            values[slots] = mine[:, column]
            columns.append(values)
        per_test.append(_PerEntry(*columns))
    return positions, per_test


def _changes(baseline: _PerEntry, candidate: _PerEntry) -> np.ndarray:
    """The change of each entry from the baseline to the candidate (the codes above)."""
    changes = np.full(len(baseline.graded), INCOMPLETE, dtype=np.int8)
    paired = (baseline.graded > 0) & (candidate.graded > 0)
    with_verdicts = paired & (baseline.verdicts > 0) & (candidate.verdicts > 0)
    rate_delta = candidate.pass_rate - baseline.pass_rate
    score_delta = candidate.mean_score - baseline.mean_score
    by_score = paired & ~with_verdicts
    changes[paired] = UNCHANGED
    # A pass rate is a ratio of small counts: compare with a tolerance for the division.
    changes[with_verdicts & (rate_delta < -1e-9)] = REGRESSION
    changes[with_verdicts & (rate_delta > 1e-9)] = IMPROVEMENT
    changes[by_score & (score_delta < -SCORE_MARGIN)] = REGRESSION
    changes[by_score & (score_delta > SCORE_MARGIN)] = IMPROVEMENT
    return changes


def _delta(test: Test, baseline: _PerEntry, candidate: _PerEntry) -> dict[str, Any]:
    paired = (baseline.graded > 0) & (candidate.graded > 0)
    differences = (candidate.mean_score - baseline.mean_score)[paired]
    both_verdicts = paired & (baseline.verdicts > 0) & (candidate.verdicts > 0)
    rate_differences = (candidate.pass_rate - baseline.pass_rate)[both_verdicts]
    # An entry's verdict: passed in most of its graded runs.
    base_passes = baseline.pass_rate[both_verdicts] > 0.5
    candidate_passes = candidate.pass_rate[both_verdicts] > 0.5
    changes = _changes(baseline, candidate)
    return {
        "test_id": test.pk,
        "entries_compared": int(paired.sum()),
        "mean_score_delta": float(differences.mean()) if len(differences) else None,
        "mean_score_delta_ci": figures.paired_bootstrap_interval(differences),
        "p_value": figures.wilcoxon_p(differences),
        "pass_rate_delta": float(rate_differences.mean()) if len(rate_differences) else None,
        "regressions": int((changes == REGRESSION).sum()),
        "improvements": int((changes == IMPROVEMENT).sum()),
        "unchanged": int((changes == UNCHANGED).sum()),
        "mcnemar_p": (
            figures.mcnemar_exact_p(
                int((base_passes & ~candidate_passes).sum()),
                int((~base_passes & candidate_passes).sum()),
            )
            if both_verdicts.any()
            else None
        ),
    }


def _test_item(test: Test, sums: _PerEntry, histogram: Any) -> dict[str, Any]:
    graded, passed = int(sums.graded.sum()), int(sums.passed.sum())
    score_sum = float(sums.score_sum.sum())
    target = target_summary(test)
    return {
        "id": test.pk,
        "target": {"id": target["id"], "name": target["name"], "model": target["model"]},
        "status": test.status,
        "total_runs": int(sums.runs.sum()),
        "graded": graded,
        "mean_score": score_sum / graded if graded else None,
        "pass_rate": passed / graded if graded else None,
        **figures_of_test(
            test=test,
            passed=passed,
            graded=graded,
            moments=figures.ScoreMoments.of_entries(sums.graded, sums.score_sum),
            graded_by_entry=sums.graded,
            passed_by_entry=sums.passed,
            histogram=histogram,
        ),
    }


def _page_rows(
    *, tests: list[Test], positions: list[int]
) -> tuple[dict[int, tuple[uuid.UUID, str]], dict[tuple[uuid.UUID, int], uuid.UUID]]:
    """The id and title of each entry of the page, and the invocation to open for each test and
    entry: the latest invocation of the entry's latest run (by cycle and ordinal) that has one."""
    if not positions:
        return {}, {}
    entries = {
        position: (pk, title)
        for position, pk, title in BenchmarkEntry.objects.filter(
            benchmark_id=tests[0].benchmark_id, position__in=positions
        )
        .order_by()
        .values_list("position", "id", "title")
    }
    position_of = {pk: position for position, (pk, _) in entries.items()}
    condition = Q()
    for test in tests:
        condition |= summarized_runs(test)
    invocations: dict[tuple[uuid.UUID, int], uuid.UUID] = {}
    runs = (
        TestRun.objects.filter(condition, entry_id__in=list(position_of))
        .exclude(latest_invocation__isnull=True)
        .order_by("cycle", "ordinal")
        .values_list("test_id", "entry_id", "latest_invocation_id")
    )
    for test_id, entry_id, invocation_id in runs:
        invocations[(test_id, position_of[entry_id])] = invocation_id  # the last one wins
    return entries, invocations


def _result(sums: _PerEntry, slot: int) -> dict[str, Any]:
    graded = int(sums.graded[slot])
    verdicts = int(sums.verdicts[slot])
    return {
        "runs": int(sums.runs[slot]),
        "graded": graded,
        "mean_score": float(sums.score_sum[slot] / graded) if graded else None,
        "pass_rate": float(sums.passed[slot] / verdicts) if verdicts else None,
    }


@dataclass
class _Loaded:
    tests: list[Test]
    positions: np.ndarray
    sums: list[_PerEntry]
    changes: np.ndarray

    def score_delta(self) -> np.ndarray:
        """The first candidate's mean score minus the baseline's, per entry (NaN: incomplete)."""
        return self.sums[1].mean_score - self.sums[0].mean_score


def _load(*, user: Any, test_ids: list[uuid.UUID]) -> _Loaded:
    tests = _visible_tests(user=user, test_ids=test_ids)
    positions, sums = _per_entry(tests)
    return _Loaded(tests=tests, positions=positions, sums=sums, changes=_changes(sums[0], sums[1]))


def _selected(loaded: _Loaded, *, only: str | None, order: str) -> np.ndarray:
    """The slots of the entries that pass ``only``, in ``order``."""
    if only is not None and only not in ONLY_CHOICES:
        raise ValidationFailed(
            f"only must be one of {', '.join(ONLY_CHOICES)} or null.",
            fields={"only": [f"One of {', '.join(ONLY_CHOICES)} or null."]},
        )
    if order not in ORDER_CHOICES:
        raise ValidationFailed(
            f"order must be one of {', '.join(ORDER_CHOICES)}.",
            fields={"order": [f"One of {', '.join(ORDER_CHOICES)}."]},
        )
    selected = np.arange(len(loaded.positions))
    if only is not None:
        selected = selected[np.isin(loaded.changes, ONLY_CODES[only])]
    if order == "delta":
        # Stable: equal deltas keep position order; NaN (incomplete) sorts last.
        selected = selected[np.argsort(loaded.score_delta()[selected], kind="stable")]
    return selected


def _comparison(
    loaded: _Loaded, *, selected: np.ndarray, page_size: int, page_offset: int
) -> Comparison:
    if not 1 <= page_size <= PAGE_SIZE_MAX:
        raise ValidationFailed(
            f"page_size must be between 1 and {PAGE_SIZE_MAX}.",
            fields={"page_size": [f"Must be between 1 and {PAGE_SIZE_MAX}."]},
        )
    tests, sums = loaded.tests, loaded.sums
    page = selected[max(0, page_offset) : max(0, page_offset) + page_size]
    page_positions = [int(loaded.positions[slot]) for slot in page]
    entries, invocations = _page_rows(tests=tests, positions=page_positions)
    histograms = step_histograms(tests)
    entry_items = []
    for slot, position in zip(page, page_positions, strict=True):
        entry_id, title = entries.get(position, (None, ""))
        entry_items.append(
            {
                "entry_id": entry_id,
                "position": position,
                "title": title,
                "change": CHANGE_NAMES[loaded.changes[slot]],
                "results": [
                    {
                        "test_id": test.pk,
                        **_result(test_sums, slot),
                        "invocation_id": invocations.get((test.pk, position)),
                    }
                    for test, test_sums in zip(tests, sums, strict=True)
                ],
            }
        )
    return Comparison(
        baseline_test_id=tests[0].pk,
        benchmark_id=tests[0].benchmark_id,
        tests=[
            _test_item(test, test_sums, histograms[test.pk])
            for test, test_sums in zip(tests, sums, strict=True)
        ],
        deltas=[
            _delta(test, sums[0], test_sums)
            for test, test_sums in zip(tests[1:], sums[1:], strict=True)
        ],
        entries=entry_items,
        total_entries=len(selected),
    )


def compare_tests(
    *,
    user: Any,
    test_ids: list[uuid.UUID],
    only: str | None = None,
    page_size: int = PAGE_SIZE_DEFAULT,
    page_offset: int = 0,
    order: str = "position",
) -> Comparison:
    """Compare ``test_ids`` (the first is the baseline); see the module docstring.

    ``only`` keeps the entries whose change (first candidate against the baseline) is a
    regression, an improvement or either; ``order`` sorts them by position or by that
    candidate's score delta, the worst first (incomplete entries last). Raises NotFound for a
    test the caller cannot see and ValidationFailed for a wrong number of tests, a repeated one
    or tests of different benchmarks.
    """
    loaded = _load(user=user, test_ids=test_ids)
    selected = _selected(loaded, only=only, order=order)
    return _comparison(loaded, selected=selected, page_size=page_size, page_offset=page_offset)


# --- what only the compare page shows ---------------------------------------------------------

SCORE_BINS = np.linspace(0.0, 1.0, 11)
DELTA_BINS = np.linspace(-1.0, 1.0, 21)


@dataclass(frozen=True)
class ComparePage:
    """A comparison with what its charts draw: per test, how many entries have a mean score in
    each tenth of the scale; for the first candidate, how many paired entries have a score delta
    in each tenth of -1..1."""

    comparison: Comparison
    tests: list[Test]
    score_bins: list[float]
    score_counts: list[list[int]]
    delta_bins: list[float]
    delta_counts: list[int]


def compare_page(
    *,
    user: Any,
    test_ids: list[uuid.UUID],
    only: str | None = None,
    order: str = "position",
    page_size: int = PAGE_SIZE_DEFAULT,
    page_offset: int = 0,
) -> ComparePage:
    """compare_tests for the staff page, with the histograms of its charts."""
    loaded = _load(user=user, test_ids=test_ids)
    selected = _selected(loaded, only=only, order=order)
    comparison = _comparison(
        loaded, selected=selected, page_size=page_size, page_offset=page_offset
    )
    score_counts = []
    for sums in loaded.sums:
        scores = sums.mean_score[sums.graded > 0]
        score_counts.append([int(count) for count in np.histogram(scores, SCORE_BINS)[0]])
    delta = loaded.score_delta()
    delta_counts = np.histogram(delta[~np.isnan(delta)], DELTA_BINS)[0]
    return ComparePage(
        comparison=comparison,
        tests=loaded.tests,
        score_bins=SCORE_BINS.tolist(),
        score_counts=score_counts,
        delta_bins=DELTA_BINS.tolist(),
        delta_counts=[int(count) for count in delta_counts],
    )


CSV_CHUNK = 2000


def comparison_rows(*, user: Any, test_ids: list[uuid.UUID]) -> Iterator[list[Any]]:
    """Every entry of a comparison as CSV rows, a header first: the entry, its change, each
    test's runs, graded runs, mean score and pass rate, and the first candidate's score delta.

    Checks the tests before the first row (NotFound, ValidationFailed); titles are read in
    chunks, so memory stays bounded by the per-entry sums.
    """
    loaded = _load(user=user, test_ids=test_ids)
    tests = loaded.tests
    header = ["position", "entry_id", "title", "change"]
    for index in range(len(tests)):
        role = "baseline" if index == 0 else f"candidate{index}"
        header += [f"{role}_{name}" for name in ("runs", "graded", "mean_score", "pass_rate")]
    header.append("score_delta")
    delta = loaded.score_delta()

    def rows() -> Iterator[list[Any]]:
        yield header
        for start in range(0, len(loaded.positions), CSV_CHUNK):
            slots = range(start, min(len(loaded.positions), start + CSV_CHUNK))
            positions = [int(loaded.positions[slot]) for slot in slots]
            entries = {
                position: (pk, title)
                for position, pk, title in BenchmarkEntry.objects.filter(
                    benchmark_id=tests[0].benchmark_id, position__in=positions
                )
                .order_by()
                .values_list("position", "id", "title")
            }
            for slot, position in zip(slots, positions, strict=True):
                entry_id, title = entries.get(position, ("", ""))
                row: list[Any] = [position, entry_id, title, CHANGE_NAMES[loaded.changes[slot]]]
                for sums in loaded.sums:
                    result = _result(sums, slot)
                    row += [
                        result["runs"],
                        result["graded"],
                        result["mean_score"],
                        result["pass_rate"],
                    ]
                row.append(None if np.isnan(delta[slot]) else float(delta[slot]))
                yield row

    return rows()


@dataclass(frozen=True)
class EntryTurn:
    turn: int
    input: str
    reference: str | None
    # Per test, in the comparison's order: the output and the error of this turn (None: the
    # test's replay has no such turn).
    outputs: list[tuple[str, str] | None]


@dataclass(frozen=True)
class EntrySideBySide:
    position: int
    title: str
    entry_id: uuid.UUID | None
    invocation_ids: list[uuid.UUID | None]
    turns: list[EntryTurn]


MAX_TURNS_SIDE_BY_SIDE = 200


def entry_side_by_side(*, user: Any, test_ids: list[uuid.UUID], position: int) -> EntrySideBySide:
    """One entry of a comparison turn by turn: the input, the reference and each test's output
    (from the invocation its result names). NotFound for an entry the benchmark does not have."""
    tests = _visible_tests(user=user, test_ids=test_ids)
    entry = (
        BenchmarkEntry.objects.filter(benchmark_id=tests[0].benchmark_id, position=position)
        .values_list("id", "title")
        .first()
    )
    if entry is None:
        raise NotFound("The benchmark has no entry at that position.")
    _, invocations = _page_rows(tests=tests, positions=[position])
    invocation_ids = [invocations.get((test.pk, position)) for test in tests]
    steps = (
        ReplayStep.objects.filter(
            invocation_id__in=[pk for pk in invocation_ids if pk is not None],
            turn__lte=MAX_TURNS_SIDE_BY_SIDE,
        )
        .order_by("turn")
        .values_list("invocation_id", "turn", "input", "reference", "output", "error")
    )
    column_of = {pk: index for index, pk in enumerate(invocation_ids) if pk is not None}
    turns: dict[int, EntryTurn] = {}
    for invocation_id, turn, text, reference, output, error in steps:
        item = turns.setdefault(
            turn,
            EntryTurn(turn=turn, input=text, reference=reference, outputs=[None] * len(tests)),
        )
        item.outputs[column_of[invocation_id]] = (output, error)
    return EntrySideBySide(
        position=position,
        title=entry[1],
        entry_id=entry[0],
        invocation_ids=invocation_ids,
        turns=[turns[turn] for turn in sorted(turns)],
    )
