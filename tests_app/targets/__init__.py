"""Clients of the model under test (DESIGN §4), built from a test's ``target_snapshot``.

``target_for(test.target_snapshot)`` validates the configuration and returns a :class:`Target`;
each user turn of a replay is one :meth:`Target.complete` call. A target raises
:class:`TargetError` only once its retries are spent, so the replay can record the final error on
the invocation. ``tests_app.targets.records`` turns a Target row into that snapshot.
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


# What a snapshot records about its target beside the client's configuration: who it was and
# what its tokens cost. The client never sees these.
DESCRIPTIVE_KEYS = frozenset({"id", "name", "price_in", "price_out"})


def target_for(snapshot: dict[str, Any] | None) -> Target:
    """The client for a target's configuration (a test's ``target_snapshot``); a malformed one
    raises ValidationFailed (400)."""
    config = snapshot or {"kind": "reference"}
    if not isinstance(config, dict):
        raise ValidationFailed(
            "The target's configuration must be a JSON object.",
            code="invalid_target",
            fields={"target": ['Expected an object such as {"kind": "reference"}.']},
        )
    kind = config.get("kind", "reference")
    if kind == "reference":
        return ReferenceTarget()
    if kind == "openai":
        return OpenAITarget.from_config(
            {key: value for key, value in config.items() if key not in DESCRIPTIVE_KEYS}
        )
    raise ValidationFailed(
        f"The target kind {kind!r} is not supported; use 'openai' or 'reference'.",
        code="invalid_target",
        fields={"kind": [f"Unknown target kind {kind!r}."]},
    )
