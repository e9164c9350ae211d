"""Clients of the model under test (DESIGN §4), built from ``Benchmark.target``.

``target_for(benchmark.target)`` validates the JSON and returns a :class:`Target`; each user turn
of a replay is one :meth:`Target.complete` call. A target raises :class:`TargetError` only once its
retries are spent, so the replay can record the final error on the invocation.
"""

from __future__ import annotations

from typing import Any

from tests_app.errors import ValidationFailed
from tests_app.targets.base import Message, Target, TargetError, TargetReply, message_text
from tests_app.targets.openai import OpenAITarget
from tests_app.targets.reference import ReferenceTarget

__all__ = [
    "Message",
    "OpenAITarget",
    "ReferenceTarget",
    "Target",
    "TargetError",
    "TargetReply",
    "message_text",
    "target_for",
]


def target_for(benchmark_target: dict[str, Any] | None) -> Target:
    """The client for a benchmark's target; a malformed target raises ValidationFailed (400)."""
    config = benchmark_target or {"kind": "reference"}
    if not isinstance(config, dict):
        raise ValidationFailed(
            "The benchmark's target must be a JSON object.",
            code="invalid_target",
            fields={"target": ['Expected an object such as {"kind": "reference"}.']},
        )
    kind = config.get("kind", "reference")
    if kind == "reference":
        return ReferenceTarget()
    if kind == "openai":
        return OpenAITarget.from_config(config)
    raise ValidationFailed(
        f"The benchmark's target kind {kind!r} is not supported; use 'openai' or 'reference'.",
        code="invalid_target",
        fields={"kind": [f"Unknown target kind {kind!r}."]},
    )
