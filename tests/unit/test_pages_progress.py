"""The test page's progress: how far, how fast, and about how long is left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests_app.pages.progress import measure, time_left_words

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def counts(**by_status: int) -> dict[str, int]:
    return {
        "pending": 0,
        "claimed": 0,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "stopped": 0,
        **by_status,
    }


def test_it_measures_the_pace_since_the_start_and_the_time_left() -> None:
    progress = measure(
        by_status=counts(pending=10, running=2, completed=6, failed=2),
        since=NOW - timedelta(minutes=2),
        finished_since=8,
        now=NOW,
    )
    assert (progress.total, progress.finished, progress.remaining) == (20, 8, 12)
    assert progress.percent == 40
    assert progress.per_minute == 4.0
    assert progress.pace == "4.0 runs/min"
    assert progress.seconds_left == 180.0
    assert progress.time_left == "about 3 min left"


def test_it_does_not_guess_before_anything_finished() -> None:
    progress = measure(by_status=counts(pending=5), since=NOW, finished_since=0, now=NOW)
    assert (progress.per_minute, progress.seconds_left, progress.pace, progress.time_left) == (
        None,
        None,
        "",
        "",
    )
    assert measure(by_status={}, since=None, finished_since=0, now=NOW).percent == 0


def test_time_left_in_words() -> None:
    assert time_left_words(0) == "done"
    assert time_left_words(20) == "under a minute left"
    assert time_left_words(90) == "about 2 min left"
    assert time_left_words(3 * 3600 + 5 * 60) == "about 3 h 05 min left"
