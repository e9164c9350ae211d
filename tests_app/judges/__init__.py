"""Graders: the LLM judge (when JUDGE_MODEL is configured) and the offline reference grader."""

from __future__ import annotations

from django.conf import settings


def default_source() -> str:
    """The Grade source that ``end`` with ``grade=true`` will produce: ``ai`` only with a judge."""
    return "ai" if settings.JUDGE_MODEL else "reference"
