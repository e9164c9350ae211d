"""The types every target shares, apart from the package so that its modules can import them
while ``tests_app.targets`` itself imports those modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Message = dict[str, Any]


class TargetError(Exception):
    """The target could not answer (after the retries its client allows)."""


@dataclass(frozen=True)
class TargetReply:
    content: str
    latency_ms: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Target(Protocol):
    # Identifies the endpoint for the per-target concurrency cap (model + base_url).
    key: str
    # The longest one complete() call may take, retries and backoff included.
    max_call_seconds: float

    def complete(
        self, *, messages: list[Message], reference: str | None, call_id: str | None = None
    ) -> TargetReply:
        """One turn's answer. ``call_id`` names the call (``<invocation id>/<turn>``) for the
        server's logs: every attempt of the same call carries the same one."""
        ...


def message_text(content: Any) -> str:
    """The text of a chat message's content, which may be a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        ]
        return "\n".join(part for part in parts if part)
    return str(content)
