"""The offline target: answers each turn with the recorded assistant message.

Used by the demo data and wherever no model is reachable; a replay against it reproduces the
recording, so the reference grader scores it 1.0 by construction.
"""

from __future__ import annotations

from tests_app.targets import Message, TargetReply


class ReferenceTarget:
    key = "reference"
    max_call_seconds = 1.0

    def complete(
        self, *, messages: list[Message], reference: str | None, call_id: str | None = None
    ) -> TargetReply:
        # A turn with no recorded answer gets an empty one, which is what the recording holds.
        return TargetReply(content=reference or "", latency_ms=0)
