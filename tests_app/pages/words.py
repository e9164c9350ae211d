"""What the pages say when a control cannot do what was asked, in a staff member's words.

The services' sentences are written for API callers ("call next", "answers 409"); a page names its
own buttons instead. Codes not listed here keep the service's sentence, which is already plain.
"""

from __future__ import annotations

from tests_app.actors import display_name
from tests_app.errors import DomainError
from tests_app.models import RunAll, Test, TestRun

# By the error's code, whatever the control.
BY_CODE = {
    "test_archived": "This test is archived: unarchive it first.",
    "test_stopped": (
        "This test is stopped, so nothing more runs in it. To run the benchmark again, start a "
        "new test from Benchmarks."
    ),
    "test_closed": "This test was stopped or archived a moment ago, so nothing more runs in it.",
    "already_enqueued": "This run's replay has already started; its turns appear below.",
    "conflict": "Something changed while that was being done: press the button again.",
}

# By control and the invocation's status (codes "invocation_<status>").
BY_CONTROL_AND_STATUS = {
    ("run", "running"): "This run is already being replayed; its turns appear below.",
    ("run", "replayed"): "This run has already been replayed: end it to grade it.",
    ("run", "ended"): "This run is already finished.",
    ("end", "created"): "This run has not been replayed yet: run it first.",
    ("end", "running"): "The replay is still running: end the run once its last turn is in.",
    ("end", "ended"): "This run is already ended.",
    (
        "regrade",
        "created",
    ): "This run has not been replayed yet: run it, then end it, to regrade it.",
    ("regrade", "running"): "The replay is still running: end the run before regrading it.",
    ("regrade", "replayed"): "End this run before regrading it.",
    ("regrade", "failed"): (
        "This run failed, so there is nothing to grade: retry the failed runs to replay it again."
    ),
    ("regrade", "stopped"): "This run was stopped, so there is nothing to grade.",
}


def for_staff(*, control: str, error: DomainError, test: Test) -> str:
    code = error.code or ""
    if control == "run-all" and "max_runs" in (error.fields or {}):
        return "An infinite test never runs out of runs: say in How many runs when to stop."
    if code.startswith("invocation_"):
        status = code.removeprefix("invocation_")
        sentence = BY_CONTROL_AND_STATUS.get((control, status))
        if sentence:
            return sentence
        if status in ("failed", "stopped"):
            return f"This run {status}; nothing more can be done with it here."
    if code == "test_completed":
        return _nothing_to_claim(test)
    if code == "run_all_active":
        return _run_all_active(test)
    return BY_CODE.get(code, error.detail)


def _run_all_active(test: Test) -> str:
    active = (
        RunAll.objects.select_related("started_by")
        .filter(test=test, status=RunAll.Status.ACTIVE)
        .first()
    )
    who = display_name(active.started_by) if active else ""
    return (
        f"Run all is already running this test{f' (started by {who})' if who else ''}. It ends "
        "by itself when no run is left waiting; Stop test ends it sooner."
    )


# Why a run-all ended (RunAll.finish_reason), as the test page says it.
FINISH_REASONS = {
    "completed": "every run has finished",
    "no_pending_runs": "no run was left waiting (agents may still hold some)",
    "max_runs": "it ran as many runs as asked",
    "test_stopped": "the test was stopped",
    "test_archived": "the test was archived",
    "starter_not_allowed": "the person who started it may no longer operate this test",
}


def finish_reason(reason: str) -> str:
    return FINISH_REASONS.get(reason, reason.replace("_", " "))


def _nothing_to_claim(test: Test) -> str:
    test.refresh_from_db(fields=["status"])
    if test.status == Test.Status.COMPLETED:
        failed = TestRun.objects.filter(test=test, status=TestRun.Status.FAILED).exists()
        return "Every run of this test has finished: there is nothing left to run." + (
            " Retry the failed runs to run them again." if failed else ""
        )
    return (
        "No run is waiting to be claimed: the others are being replayed or graded, and the test "
        "completes when they end. A run whose worker is lost comes back by itself."
    )


def regrade_note(status: str) -> str:
    """Why the shown run cannot be regraded yet (it must be ended first), or "" if it can."""
    if status == "ended":
        return ""
    return BY_CONTROL_AND_STATUS.get(("regrade", status), f"This run is {status}.")
