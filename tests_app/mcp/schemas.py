"""The JSON schemas of the tools' arguments: the REST endpoints' request bodies, as the OpenAPI
schema describes them, so a tool and its endpoint cannot drift apart.

The schema is generated as OpenAPI 3.1 (whose schemas are JSON Schema, nullable included) once
per process, and each request body is inlined: MCP clients expect one self-contained schema.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.settings import patched_settings

API_PREFIX = "/api/v5/artifacts/"


@functools.cache
def _openapi() -> dict[str, Any]:
    with patched_settings({"OAS_VERSION": "3.1.0"}):
        return dict(SchemaGenerator().get_schema(request=None, public=True))


def _inline(node: Any, components: dict[str, Any], seen: frozenset[str]) -> Any:
    if isinstance(node, list):
        return [_inline(item, components, seen) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/components/schemas/"):
        name = reference.rsplit("/", 1)[-1]
        if name in seen:
            raise ValueError(f"{name} refers to itself; a request body cannot be inlined")
        resolved = _inline(components[name], components, seen | {name})
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return {**resolved, **_inline(siblings, components, seen)}
    return {key: _inline(value, components, seen) for key, value in node.items()}


@functools.cache
def _request_schema(path: str) -> dict[str, Any]:
    schema = _openapi()
    operation = schema["paths"][path]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    inlined = _inline(body, schema["components"]["schemas"], frozenset())
    # The component's description is the input serializer's docstring, written for developers.
    inlined.pop("description", None)
    return dict(inlined)


def request_schema(endpoint: str) -> dict[str, Any]:
    """The JSON schema of ``POST /api/v5/artifacts/<endpoint>``'s body, e.g. ``test/start``."""
    return copy.deepcopy(_request_schema(API_PREFIX + endpoint))
