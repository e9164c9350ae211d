"""Clients of the model under test (DESIGN §4), built from ``Benchmark.target``.

``target_for(benchmark.target)`` validates the JSON and returns a :class:`Target`; each user turn
of a replay is one :meth:`Target.complete` call. A target raises :class:`TargetError` only once its
retries are spent, so the replay can record the final error on the invocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tests_app.errors import ValidationFailed

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

    def complete(self, *, messages: list[Message], reference: str | None) -> TargetReply: ...

    def close(self) -> None: ...


def target_for(benchmark_target: dict[str, Any] | None) -> Target:
    """The client for a benchmark's target; a malformed target raises ValidationFailed (400)."""
    from tests_app.targets.openai import OpenAITarget
    from tests_app.targets.reference import ReferenceTarget

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
