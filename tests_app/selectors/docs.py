"""Documentation of the Test API composed from the code itself (DESIGN §3 "docs").

Nothing here is a hand-kept copy: the operations, their summaries and every field with its help
text come from the OpenAPI schema that drf-spectacular generates from the URL conf, the viewset
actions and their serializers. Building that schema is costly, so the caller-independent part is
cached under the ``test-docs`` tag (refresh invalidates it); permissions are computed per call.

What the sections hold:

* ``artifact``: the fields of get's answer (the Test artifact).
* ``entries``: the shapes under the artifact's ``entries``; for one test, also its entries.
* ``resources``: the shapes under the artifact's ``resources``, then every other request and
  answer shape of the operations; for one test, first its eval (description), rubric (criteria),
  benchmark and department.
* ``permissions``/``api_operations``: every operation under the Test prefix with whether this
  caller may use it; ``permissions`` says why in its summary.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.settings import spectacular_settings

from tests_app import api as api_package
from tests_app import cache_tags
from tests_app.models import BenchmarkEntry, Test
from tests_app.selectors import scope

# Who may use what (DESIGN §3 "Auth, scope"); any other operation needs the operator role.
READ_OPERATIONS = frozenset({"get", "search", "docs", "export", "compare"})
STAFF_OPERATIONS = frozenset({"refresh"})
MAX_ENTRY_DOCS = 100
DOCS_CACHE_TIMEOUT = 3600


@dataclass(frozen=True)
class DocsField:
    name: str
    type: str
    required: bool
    description: str


@dataclass(frozen=True)
class DocsEntry:
    name: str
    type: str
    description: str
    fields: list[DocsField] = field(default_factory=list)


@dataclass(frozen=True)
class OperationInfo:
    name: str
    method: str
    path: str
    summary: str
    allowed: bool


@dataclass(frozen=True)
class PageMetadata:
    title: str
    description: str
    schema_url: str
    docs_url: str


@dataclass(frozen=True)
class TestDocs:
    __test__ = False

    name: str
    type: str
    description: str
    artifact: DocsEntry | None
    entries: list[DocsEntry]
    resources: list[DocsEntry]
    permissions: list[OperationInfo]
    api_operations: list[OperationInfo]
    page_metadata: PageMetadata


# --- composing from the schema ----------------------------------------------------------------


def operations_prefix() -> str:
    """The path prefix of the Test operations, read from the URL conf (docs is one of them)."""
    return reverse("test-docs").rsplit("/", 1)[0] + "/"


def _ref_name(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    if ref:
        return str(ref).rsplit("/", 1)[-1]
    for combinator in ("allOf", "oneOf", "anyOf"):
        for part in node.get(combinator) or []:
            name = _ref_name(part)
            if name:
                return name
    return None


def _type_of(node: dict[str, Any]) -> str:
    name = _ref_name(node)
    if name:
        text = name
    elif node.get("type") == "array":
        text = f"{_type_of(node.get('items') or {})}[]"
    elif node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        text = f"object<string, {_type_of(node['additionalProperties'])}>"
    else:
        text = str(node.get("type") or "any")
        if node.get("format"):
            text += f" ({node['format']})"
    return f"{text} | null" if node.get("nullable") else text


def _refs_in(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        name = node.get("$ref")
        if name:
            found.append(str(name).rsplit("/", 1)[-1])
        for value in node.values():
            found.extend(_refs_in(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs_in(value))
    return found


def _reachable(start: list[str], components: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    pending = list(start)
    while pending:
        name = pending.pop(0)
        if name in seen or name not in components:
            continue
        seen.append(name)
        pending.extend(_refs_in(components[name]))
    return seen


def _component_doc(name: str, component: dict[str, Any], kind: str) -> dict[str, Any]:
    required = set(component.get("required") or [])
    return {
        "name": name,
        "type": kind,
        "description": str(component.get("description") or ""),
        "fields": [
            {
                "name": str(field_name),
                "type": _type_of(prop),
                "required": field_name in required,
                "description": str(prop.get("description") or ""),
            }
            for field_name, prop in (component.get("properties") or {}).items()
        ],
    }


def _json_ref(body: dict[str, Any] | None) -> str | None:
    content = (body or {}).get("content") or {}
    schema = (content.get("application/json") or {}).get("schema") or {}
    return _ref_name(schema)


def _compose_from_schema() -> dict[str, Any]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components: dict[str, Any] = (schema.get("components") or {}).get("schemas") or {}
    prefix = operations_prefix()
    operations: list[dict[str, Any]] = []
    request_refs: list[str] = []
    response_refs: list[str] = []
    for path, item in sorted((schema.get("paths") or {}).items()):
        if not path.startswith(prefix):
            continue
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            request_ref = _json_ref(operation.get("requestBody"))
            response_ref = _json_ref((operation.get("responses") or {}).get("200"))
            request_refs += [request_ref] if request_ref else []
            response_refs += [response_ref] if response_ref else []
            operations.append(
                {
                    "name": path[len(prefix) :].strip("/"),
                    "method": method.upper(),
                    "path": path,
                    "summary": str(operation.get("summary") or ""),
                    "description": str(operation.get("description") or ""),
                    "response": response_ref,
                }
            )

    artifact_ref = next((op["response"] for op in operations if op["name"] == "get"), None)
    artifact = components.get(artifact_ref or "")
    artifact_doc = (
        _component_doc(artifact_ref, artifact, "object") if artifact_ref and artifact else None
    )
    properties = (artifact or {}).get("properties") or {}
    entry_names = _reachable(_refs_in(properties.get("entries") or {}), components)
    resource_names = _reachable(_refs_in(properties.get("resources") or {}), components)
    listed = {artifact_ref, *entry_names, *resource_names}
    others = [
        name
        for name in _reachable([*request_refs, *response_refs], components)
        if name not in listed
    ]
    requests = set(request_refs)
    return {
        "operations": operations,
        "artifact": artifact_doc,
        "entries": [_component_doc(name, components[name], "object") for name in entry_names],
        "resources": [_component_doc(name, components[name], "object") for name in resource_names]
        + [
            _component_doc(name, components[name], "request" if name in requests else "object")
            for name in others
        ],
    }


@functools.cache
def _code_fingerprint() -> str:
    """Changes when the API code changes, so a shared cache (Redis outlives a deploy) never serves
    the docs of the previous release. Computed once per process."""
    digest = hashlib.sha256(str(spectacular_settings.VERSION).encode())
    for path in sorted(Path(api_package.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def composed_docs() -> dict[str, Any]:
    key = f"docs:{_code_fingerprint()}"
    return cache_tags.cached(
        [cache_tags.DOCS], key, _compose_from_schema, timeout=DOCS_CACHE_TIMEOUT
    )


def _entry(data: dict[str, Any]) -> DocsEntry:
    return DocsEntry(
        name=data["name"],
        type=data["type"],
        description=data["description"],
        fields=[DocsField(**item) for item in data["fields"]],
    )


# --- permissions --------------------------------------------------------------------------------


def access_level(operation: str) -> str:
    if operation in READ_OPERATIONS:
        return "read"
    if operation in STAFF_OPERATIONS:
        return "staff"
    return "operate"


def _permission(user: Any, operation: str, test: Test | None) -> tuple[bool, str]:
    level = access_level(operation)
    if level == "staff":
        return bool(user.is_staff), "Staff only."
    if level == "read":
        if test is not None:
            return True, "You may read this test."
        return True, "Any member may use it; results cover the departments you belong to."
    if test is not None:
        allowed = scope.can_operate_department(user, test.department_id)
        return allowed, (
            "You are an operator of this test's department."
            if allowed
            else "Needs the operator role in this test's department; you may only read it."
        )
    allowed = scope.is_operator_anywhere(user)
    return allowed, (
        "You are an operator: allowed on the tests of your operator departments."
        if allowed
        else "Needs the operator role in the test's department; you are a viewer."
    )


# --- the answer -----------------------------------------------------------------------------------


def _test_resources(test: Test) -> list[DocsEntry]:
    rubric = test.eval.rubric
    criteria = [item for item in rubric.criteria or [] if isinstance(item, dict)]
    return [
        DocsEntry(name=test.eval.name, type="eval", description=test.eval.description),
        DocsEntry(
            name=rubric.name,
            type="rubric",
            description=(
                f"{rubric.description} A run passes at a weighted score of at least "
                f"{rubric.pass_threshold:g}."
            ).strip(),
            fields=[
                DocsField(
                    name=str(item.get("name") or ""),
                    type="criterion",
                    required=True,
                    description=f"{item.get('description') or ''} (weight {item.get('weight', 1)})",
                )
                for item in criteria
            ],
        ),
        DocsEntry(
            name=test.benchmark.name,
            type="benchmark",
            description=(
                f"Run against {_target_words(test)}, {test.benchmark.runs_per_entry} run(s) "
                f"per entry, {test.benchmark.get_replay_mode_display()}."
            ),
        ),
        DocsEntry(name=test.department.name, type="department", description=""),
    ]


def _target_words(test: Test) -> str:
    """The target as the test ran it: its name, and kind and model from the snapshot."""
    snapshot = test.target_snapshot or {}
    kind = snapshot.get("kind") or "reference"
    model = f" {snapshot['model']}" if snapshot.get("model") else ""
    return f"the target {test.target.name} ({kind}{model})"


def _test_entries(test: Test) -> DocsEntry:
    entries = list(
        BenchmarkEntry.objects.filter(benchmark_id=test.benchmark_id)
        .order_by("position")
        .values("position", "title", "turns")[:MAX_ENTRY_DOCS]
    )
    return DocsEntry(
        name=test.benchmark.name,
        type="benchmark_entries",
        description=f"The recorded conversations replayed by this test (first {MAX_ENTRY_DOCS}).",
        fields=[
            DocsField(
                name=entry["title"] or f"Entry {entry['position']}",
                type="entry",
                required=True,
                description=f"Position {entry['position']}, {entry['turns']} user turn(s).",
            )
            for entry in entries
        ],
    )


def get_test_docs(*, user: Any, entity_id: uuid.UUID | str | None = None) -> TestDocs:
    test = None
    if entity_id is not None:
        test = scope.get_visible_test(
            user=user,
            test_id=entity_id,
            queryset=Test.objects.select_related(
                "eval__rubric", "benchmark", "department", "target"
            ),
        )
    composed = composed_docs()
    permissions: list[OperationInfo] = []
    api_operations: list[OperationInfo] = []
    for operation in composed["operations"]:
        allowed, reason = _permission(user, operation["name"], test)
        common = {
            "name": operation["name"],
            "method": operation["method"],
            "path": operation["path"],
        }
        api_operations.append(
            OperationInfo(**common, summary=operation["summary"], allowed=allowed)
        )
        permissions.append(OperationInfo(**common, summary=reason, allowed=allowed))

    artifact = _entry(composed["artifact"]) if composed["artifact"] else None
    entries = [_entry(item) for item in composed["entries"]]
    resources = [_entry(item) for item in composed["resources"]]
    name, description = "Test", str(spectacular_settings.DESCRIPTION)
    if test is not None:
        name = f"Test of {test.benchmark.name}"
        description = test.eval.description or f"A test of the eval {test.eval.name}."
        if artifact is not None:
            artifact = DocsEntry(
                name=artifact.name,
                type=artifact.type,
                description=f"{test.eval.name}: {description}",
                fields=artifact.fields,
            )
        entries.append(_test_entries(test))
        resources = [*_test_resources(test), *resources]
    return TestDocs(
        name=name,
        type="artifact",
        description=description,
        artifact=artifact,
        entries=entries,
        resources=resources,
        permissions=permissions,
        api_operations=api_operations,
        page_metadata=PageMetadata(
            title=f"{spectacular_settings.TITLE}: Test",
            description=str(spectacular_settings.DESCRIPTION),
            schema_url=reverse("schema"),
            docs_url=reverse("swagger-ui"),
        ),
    )
