"""Target rows as the configuration a client is built from, and the snapshot a test keeps.

A snapshot is plain JSON: the client's configuration (``kind``, ``model``, ``base_url``,
``api_key_env``, ``temperature``, ``max_tokens``, ``seed``, ``timeout_s``, ``max_retries``) and
what describes the target beside it (``id``, ``name``, ``price_in``, ``price_out``, which
``target_for`` leaves out). A reference target's snapshot keeps only the kind and the description:
nothing else changes what it answers.
"""

from __future__ import annotations

from typing import Any

from tests_app.models import Target
from tests_app.targets.openai import OpenAIConfig


def config_of(target: Target) -> dict[str, Any]:
    """What the client of ``target`` is built from (no name, no prices)."""
    if target.kind == Target.Kind.REFERENCE:
        return {"kind": Target.Kind.REFERENCE.value}
    return {
        "kind": Target.Kind.OPENAI.value,
        "model": target.model,
        "base_url": target.base_url or None,
        "api_key_env": target.api_key_env or None,
        "temperature": target.temperature,
        "max_tokens": target.max_tokens,
        "seed": target.seed,
        "timeout_s": target.timeout_s,
        "max_retries": target.max_retries,
    }


def snapshot_of(target: Target) -> dict[str, Any]:
    """The configuration a test freezes at start, with the target's identity and prices."""
    return {
        **config_of(target),
        "id": str(target.pk),
        "name": target.name,
        "price_in": float(target.price_in) if target.price_in is not None else None,
        "price_out": float(target.price_out) if target.price_out is not None else None,
    }


def validate(target: Target) -> None:
    """Raise ValidationFailed (with the field at fault) when the client could not be built."""
    if target.kind == Target.Kind.OPENAI:
        OpenAIConfig.parse(config_of(target))
