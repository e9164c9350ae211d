"""Every endpoint against hostile input: a 4xx in the one error body, and nothing written.

Each POST endpoint gets a body that is valid but for one thing (ids of real rows the caller may
operate, so only the bad part can be refused), then the whole-body cases (too large, too deep,
not JSON, not an object) and, field by field, values of the wrong type or out of range.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.api.lifecycle_support import assert_error, invocation_ids
from tests_app.models import ApiKey, Grade, Test, TestInvocation, TestRun, Upload

pytestmark = pytest.mark.django_db

TEST_API = "/api/v5/artifacts/test"
BENCHMARK_SEARCH = "/api/v5/artifacts/benchmark/search"
HUGE = 9223372036854775808  # one more than PostgreSQL's bigint
ENORMOUS = 10**30
DEEP = 5000

# Per kind of field: JSON values that must be refused with 400. Raw JSON text, so that values
# Python's json module cannot write (NaN, a lone surrogate) are sent as a client would.
UUID_BAD = ["true", "false", "1", "0", "1.5", '"not-a-uuid"', '""', '"\\u0000"', "[]", "{}"]
INT_BAD = ["true", "1.5", '"1"', "-1", str(HUGE), str(ENORMOUS), "NaN", "[]", "{}", "1e400"]
BOOL_BAD = ["1", "0", '"true"', "[]", "{}", '"\\u0000"']
FLOAT_BAD = ["true", '"0.5"', "NaN", "Infinity", "-Infinity", "1.5", "-0.1", "[]", "1e400"]
STRING_BAD = ["1", "true", "[]", "{}", '"a\\u0000b"', '"\\ud800"']
UUID_LIST_BAD = ['"x"', "{}", "1", "[true]", "[1]", "[false]", '[["x"]]', "[{}]", '["x"]']
DATE_BAD = ["1", "true", "[]", '"2026-13-01"', '"tomorrow"', '"\\u0000"', '"99999-01-01"']

ENDPOINTS: dict[str, dict[str, list[str]]] = {
    "start": {"benchmark_id": UUID_BAD, "infinite_mode": [*BOOL_BAD, "null"]},
    "next": {"test_id": [*UUID_BAD, "null"]},
    "run": {"test_id": UUID_BAD, "test_invocation_id": UUID_BAD, "run_id": UUID_BAD},
    "end": {
        "test_id": UUID_BAD,
        "test_invocation_id": UUID_BAD,
        "run_id": UUID_BAD,
        "grade": [*BOOL_BAD, "null"],
        "score": FLOAT_BAD,
        "passed": BOOL_BAD,
        "feedback": STRING_BAD,
    },
    "stop": {"invocation_id": UUID_BAD},
    "get": {
        "test_id": UUID_BAD,
        "runs_page_size": [*INT_BAD, "0", "100000"],
        "runs_page_offset": INT_BAD,
    },
    "archive": {"test_ids": [*UUID_LIST_BAD, "null"], "archived": [*BOOL_BAD, "null"]},
    "search": {
        "eval_ids": UUID_LIST_BAD,
        "department_ids": UUID_LIST_BAD,
        "is_archived": BOOL_BAD,
        "start_date": DATE_BAD,
        "end_date": DATE_BAD,
        "eval_search": STRING_BAD,
        "department_search": STRING_BAD,
        "page_size": [*INT_BAD, "0", "101"],
        "page_offset": INT_BAD,
    },
    "docs": {"entity_id": UUID_BAD},
    "export": {"test_id": [*UUID_BAD, "null"]},
    "refresh": {},
    "benchmark/search": {
        "search": STRING_BAD,
        "eval_ids": UUID_LIST_BAD,
        "department_ids": UUID_LIST_BAD,
        "page_size": [*INT_BAD, "0", "101"],
        "page_offset": INT_BAD,
    },
    "judge/agreement": {"rubric_id": UUID_BAD},
}


def url(endpoint: str) -> str:
    if endpoint == "benchmark/search":
        return BENCHMARK_SEARCH
    if endpoint == "judge/agreement":
        return "/api/v5/artifacts/judge/agreement"
    return f"{TEST_API}/{endpoint}"


@pytest.fixture
def valid_bodies(benchmark: Any, replayed: TestInvocation) -> dict[str, dict[str, Any]]:
    """A body per endpoint that only its one bad part can make fail (as the operator)."""
    test_id = str(replayed.test_id)
    return {
        "start": {"benchmark_id": str(benchmark.pk)},
        "next": {"test_id": test_id},
        "run": invocation_ids(replayed),
        "end": {**invocation_ids(replayed), "score": 0.5, "passed": True, "feedback": "ok"},
        "stop": {"invocation_id": str(replayed.pk)},
        "get": {"test_id": test_id},
        "archive": {"test_ids": [test_id]},
        "search": {},
        "docs": {"entity_id": test_id},
        "export": {"test_id": test_id},
        "refresh": {},
        "benchmark/search": {},
        "judge/agreement": {},
    }


def snapshot() -> dict[str, Any]:
    """What a write could change: rows of every table the endpoints write, and their states."""
    return {
        "tests": sorted(Test.objects.values_list("pk", "status", "is_archived", "total_runs")),
        "runs": sorted(TestRun.objects.values_list("pk", "status")),
        "invocations": sorted(TestInvocation.objects.values_list("pk", "status")),
        "grades": Grade.objects.count(),
        "uploads": Upload.objects.count(),
    }


@pytest.fixture
def send(client_for: Any, operator: Any) -> Callable[[str, bytes], Any]:
    client: APIClient = client_for(operator)

    def post(endpoint: str, raw: bytes) -> Any:
        # The stubs type the body as text; the client sends bytes as they are.
        return client.generic("POST", url(endpoint), raw, content_type="application/json")  # type: ignore[arg-type]

    return post


def with_raw_field(body: dict[str, Any], name: str, raw_value: str) -> bytes:
    """``body`` as JSON with ``name`` set to the raw JSON text ``raw_value``."""
    rest = {key: value for key, value in body.items() if key != name}
    encoded = json.dumps(rest)
    member = f"{json.dumps(name)}: {raw_value}"
    return (encoded[:-1] + (", " if rest else "") + member + "}").encode()


def whole_body_cases() -> list[tuple[str, bytes, int]]:
    too_large = b'{"feedback": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b'"}'
    return [
        ("too large", too_large, 413),
        ("nested too deep (arrays)", b"[" * DEEP + b"]" * DEEP, 400),
        ("nested too deep (objects)", b'{"a":' * DEEP + b"1" + b"}" * DEEP, 400),
        ("nested 1000 deep in a field", b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400),
        ("not JSON", b"{not json", 400),
        ("invalid UTF-8", b'{"test_id": "\xff\xfe"}', 400),
        ("a NUL byte", b'{"test_id": "\x00"}', 400),
        ("NaN", b"NaN", 400),
        ("null", b"null", 400),
        ("an array", b"[]", 400),
        ("an array of an object", b'[{"test_id": "x"}]', 400),
        ("a string", b'"{}"', 400),
        ("a number", str(HUGE).encode(), 400),
        ("a boolean", b"true", 400),
        ("an unknown field", b'{"nope\\u0000": 1}', 400),
    ]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_a_malformed_body_is_a_4xx_and_writes_nothing(
    endpoint: str, send: Any, valid_bodies: dict[str, Any]
) -> None:
    before = snapshot()
    for case, raw, status in whole_body_cases():
        response = send(endpoint, raw)
        body = assert_error(response, status)
        assert set(body) <= {"detail", "code", "fields"}, (endpoint, case, body)
        if status == 413:
            assert body["code"] == "payload_too_large", (endpoint, case)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [(endpoint, field) for endpoint, fields in ENDPOINTS.items() for field in fields],
)
def test_a_bad_field_is_a_400_naming_it_and_writes_nothing(
    endpoint: str, field: str, send: Any, valid_bodies: dict[str, Any]
) -> None:
    before = snapshot()
    for raw_value in ENDPOINTS[endpoint][field]:
        response = send(endpoint, with_raw_field(valid_bodies[endpoint], field, raw_value))
        body = assert_error(response, 400)
        assert set(body) <= {"detail", "code", "fields"}
        if body["code"] == "invalid" and "fields" in body and raw_value != "NaN":
            assert field in body["fields"] or "non_field_errors" in body["fields"], (
                endpoint,
                field,
                raw_value,
                body,
            )
    assert snapshot() == before


def test_the_valid_bodies_are_valid(
    client_for: Any, operator: Any, valid_bodies: dict[str, Any]
) -> None:
    # The bodies above are refused only for what each case changes: read endpoints accept them.
    client = client_for(operator)
    for endpoint in ("get", "search", "docs", "benchmark/search"):
        response = client.post(url(endpoint), valid_bodies[endpoint], format="json")
        assert response.status_code == 200, (endpoint, response.content)
    assert ApiKey.objects.filter(user=operator).exists()
