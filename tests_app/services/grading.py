"""Grade a replayed invocation with the configured judge (DESIGN §4).

Called by the ``grade_invocation`` task for a ``pending`` Grade that ``end`` created. The judge
runs outside any transaction; the result is stored with a conditional UPDATE (pending → done or
failed), so a task delivered twice stores one result.
"""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from tests_app import cache_tags
from tests_app.judges import JudgeError, Transcript, TranscriptTurn, Verdict, judge_for_settings
from tests_app.models import Grade, ReplayStep
from tests_app.realtime.events import publish_on_commit
from tests_app.services import test_state

logger = logging.getLogger(__name__)

# A transcript longer than this is graded on its first turns (a judge's context is finite).
MAX_GRADED_TURNS = 200
MAX_FEEDBACK_TEXT = 4_000


def transcript_for(grade: Grade) -> Transcript:
    invocation = grade.invocation
    rubric = invocation.test.eval.rubric
    steps = ReplayStep.objects.filter(invocation=invocation).order_by("turn")[:MAX_GRADED_TURNS]
    return Transcript(
        rubric_name=rubric.name,
        rubric_description=rubric.description,
        criteria=list(rubric.criteria or []),
        pass_threshold=rubric.pass_threshold,
        judge_instructions=rubric.judge_instructions,
        eval_name=invocation.test.eval.name,
        eval_description=invocation.test.eval.description,
        turns=[
            TranscriptTurn(
                turn=step.turn,
                input=step.input,
                output=step.output,
                reference=step.reference,
                error=step.error,
            )
            for step in steps
        ],
    )


def _store(grade: Grade, verdict: Verdict) -> None:
    with transaction.atomic():
        stored = Grade.objects.filter(pk=grade.pk, status=Grade.Status.PENDING).update(
            status=Grade.Status.DONE,
            # The judge actually used decides the source: never call the offline grader "ai".
            source=verdict.source,
            score=verdict.score,
            passed=verdict.passed,
            feedback=verdict.feedback[:MAX_FEEDBACK_TEXT],
            criteria_scores=verdict.criteria_scores,
            provenance=verdict.provenance,
            updated_at=timezone.now(),
        )
        if stored != 1:
            logger.info("Grade %s was settled meanwhile; dropping this result", grade.pk)
            return
        test_state.count_settled_grade(test_id=grade.invocation.test_id)
        grade.refresh_from_db()
        test_state.complete_grade(grade=grade)


def _fail(grade: Grade, error: str, *, kind: str) -> None:
    with transaction.atomic():
        failed = Grade.objects.filter(pk=grade.pk, status=Grade.Status.PENDING).update(
            status=Grade.Status.FAILED,
            feedback=error[:MAX_FEEDBACK_TEXT],
            # What went wrong, for a machine: timeout, unreachable, refused, too_long, ...
            provenance={"error": kind},
            updated_at=timezone.now(),
        )
        if failed == 1:
            test_state.count_settled_grade(test_id=grade.invocation.test_id)
            pending_grades, seq = test_state.pending_grades_and_seq(
                test_id=grade.invocation.test_id
            )
            cache_tags.invalidate_on_commit(cache_tags.detail_tag(grade.invocation.test_id))
            publish_on_commit(
                test_id=grade.invocation.test_id,
                event_type="grade.failed",
                seq=seq,
                invocation_id=grade.invocation_id,
                run_id=grade.invocation.run_id,
                grade_id=str(grade.pk),
                error=error[:MAX_FEEDBACK_TEXT],
                pending_grades=pending_grades,
            )


def grade(*, grade_id: uuid.UUID | str) -> None:
    """Settle a pending grade: the LLM judge if JUDGE_MODEL is set, else the reference grader.

    A missing grade is logged and ignored; a grade that is no longer pending is left alone.
    """
    row = Grade.objects.select_related("invocation__test__eval__rubric").filter(pk=grade_id).first()
    if row is None:
        logger.warning("Grade %s does not exist; nothing to grade", grade_id)
        return
    # Started now: the sweep gives a pending grade to another worker only once it has waited
    # GRADE_TIMEOUT since its judge last started.
    started = Grade.objects.filter(pk=row.pk, status=Grade.Status.PENDING).update(
        updated_at=timezone.now()
    )
    if started != 1:
        logger.info("Grade %s is no longer pending; nothing to grade", grade_id)
        return
    try:
        verdict = judge_for_settings().grade(transcript_for(row))
    except JudgeError as error:
        _fail(row, str(error), kind=error.kind)
        return
    except Exception as error:
        logger.exception("Grading %s crashed", grade_id)
        _fail(row, f"Grading failed unexpectedly: {error!r}", kind="crashed")
        return
    _store(row, verdict)
