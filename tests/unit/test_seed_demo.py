"""seed_demo builds the demo world once; running it again changes only the key and passwords."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from tests_app.actors import Actor
from tests_app.api.authentication import user_for_key
from tests_app.management.commands.seed_demo import LOCAL_BENCHMARK_NAME, LOCAL_TARGET_NAME
from tests_app.models import (
    ApiKey,
    Benchmark,
    BenchmarkEntry,
    Department,
    Eval,
    Membership,
    Rubric,
    count_user_turns,
)
from tests_app.services.starting import start_test

pytestmark = pytest.mark.django_db

User = get_user_model()
MODELS = (Department, Rubric, Eval, Benchmark, BenchmarkEntry, Membership, User)
KEY_PATTERN = re.compile(r"API key of operator \(shown once[^)]*\): (\S+)")
PASSWORD_PATTERN = re.compile(r"password for all of them \([^)]*\): (\S+)")


def seed(monkeypatch: pytest.MonkeyPatch, password: str | None = None) -> str:
    if password is None:
        monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("DEMO_PASSWORD", password)
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    return {model.__name__: model._default_manager.count() for model in MODELS}


def printed_key(output: str) -> str:
    match = KEY_PATTERN.search(output)
    assert match, output
    return match.group(1)


def test_seed_twice_is_idempotent_but_rotates_key_and_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first_output = seed(monkeypatch)
    first_counts = counts()
    entry_stamps = dict(BenchmarkEntry.objects.values_list("pk", "updated_at"))
    first_key = printed_key(first_output)
    first_password = PASSWORD_PATTERN.search(first_output)
    assert first_password

    second_output = seed(monkeypatch)
    second_key = printed_key(second_output)

    assert counts() == first_counts
    assert first_counts["Department"] == 2
    assert first_counts["Eval"] == 3
    # Existing rows are left as they are, not rewritten.
    assert dict(BenchmarkEntry.objects.values_list("pk", "updated_at")) == entry_stamps
    assert second_key != first_key
    assert user_for_key(first_key) is None  # the previous demo key was revoked
    assert ApiKey.objects.filter(name="demo", revoked=False).count() == 1
    second_password = PASSWORD_PATTERN.search(second_output)
    assert second_password
    assert second_password.group(1) != first_password.group(1)  # random each run
    assert User.objects.get(username="operator").check_password(second_password.group(1))


def test_users_memberships_and_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    seed(monkeypatch, password="demo-pass-123")

    admin = User.objects.get(username="admin")
    assert admin.is_staff
    assert admin.is_superuser
    assert admin.check_password("demo-pass-123")
    roles = {
        (m.user.username, m.department.name): m.role
        for m in Membership.objects.select_related("user", "department")
    }
    assert roles == {
        ("operator", "Research"): "operator",
        ("viewer", "Research"): "viewer",
        ("outsider", "Support"): "operator",
    }
    for username in ("operator", "viewer", "outsider"):
        user = User.objects.get(username=username)
        assert not user.is_staff
        assert user.check_password("demo-pass-123")


def test_seed_puts_back_documented_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    seed(monkeypatch)
    viewer = User.objects.get(username="viewer")
    Membership.objects.filter(user=viewer).update(role="operator")
    Membership.objects.create(
        user=User.objects.get(username="outsider"),
        department=Department.objects.get(name="Research"),
        role="viewer",
    )

    seed(monkeypatch)

    assert Membership.objects.get(user=viewer).role == "viewer"
    assert list(
        Membership.objects.filter(user__username="outsider").values_list(
            "department__name", flat=True
        )
    ) == ["Support"]


def test_catalog_has_weighted_rubrics_and_multi_turn_reference_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(monkeypatch)

    for rubric in Rubric.objects.all():
        assert len(rubric.criteria) >= 2
        assert all(criterion["weight"] > 0 for criterion in rubric.criteria)
        assert 0 < rubric.pass_threshold <= 1
    assert set(Eval.objects.values_list("department__name", flat=True)) == {"Research", "Support"}
    benchmarks = list(Benchmark.objects.exclude(name=LOCAL_BENCHMARK_NAME))
    assert len(benchmarks) >= 3
    for benchmark in benchmarks:
        # The offline target, as a row of the benchmark's department.
        assert benchmark.default_target.kind == "reference"
        assert benchmark.default_target.department_id == benchmark.eval.department_id
        entries = list(benchmark.entries.order_by("position"))
        assert [entry.position for entry in entries] == list(range(1, len(entries) + 1))
        assert entries
        for entry in entries:
            assert entry.turns >= 3
            assert count_user_turns(entry.messages) == entry.turns
            assert entry.title


def test_printed_output_tells_where_to_log_in_and_gives_a_usable_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = seed(monkeypatch)

    key = printed_key(output)
    found = user_for_key(key)
    assert found is not None
    assert found[0].username == "operator"
    assert "http://127.0.0.1:8000/admin/" in output
    assert "http://127.0.0.1:8000/tests/" in output
    assert (
        f"curl -s -X POST http://127.0.0.1:8000/api/v5/artifacts/test/search -H 'X-Api-Key: {key}'"
        in output
    )
    assert output.count(key) == 2  # once on its own line, once in the curl example


def test_the_local_model_demo_benchmark_points_at_the_local_server(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.LOCAL_MODEL_ENABLED = True
    settings.LOCAL_MODEL_BASE_URL = "http://127.0.0.1:8123/v1"
    seed(monkeypatch)
    seed(monkeypatch)

    local = Benchmark.objects.get(name=LOCAL_BENCHMARK_NAME)
    target = local.default_target
    assert target.name == LOCAL_TARGET_NAME
    assert target.department == local.eval.department
    assert (target.kind, target.model, target.base_url) == (
        "openai",
        "smollm2-135m-instruct",
        "http://127.0.0.1:8123/v1",
    )
    assert (target.seed, target.temperature, target.max_tokens) == (7, 0, 256)
    assert local.eval.department.name == "Research"  # the demo operator's key can start it
    same_conversations = Benchmark.objects.get(name="Abstract summaries")
    assert [entry.messages for entry in local.entries.order_by("position")] == [
        entry.messages for entry in same_conversations.entries.order_by("position")
    ]


def test_without_the_local_model_nothing_about_it_is_seeded(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.LOCAL_MODEL_ENABLED = False
    settings.JUDGE_MODEL = ""
    output = seed(monkeypatch)

    assert not Benchmark.objects.filter(name=LOCAL_BENCHMARK_NAME).exists()
    assert Benchmark.objects.count() == 3
    assert "AI grades: the offline reference comparison" in output


def test_the_printed_block_is_framed_so_it_stands_out(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = seed(monkeypatch).splitlines()
    assert lines[0] == lines[-1]
    assert set(lines[0]) == {"="}
    assert any(PASSWORD_PATTERN.search(line) for line in lines[1:-1])
    assert any(KEY_PATTERN.search(line) for line in lines[1:-1])


README = Path(__file__).resolve().parents[2] / "README.md"
README_CALL = re.compile(r"^api (benchmark/search|test/search) '(\{.*\})'", re.MULTILINE)


def test_the_readme_searches_find_something_with_the_printed_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's first agent call, and its test search, work with the key ``make run``
    prints (the key's user sees only its own departments)."""
    key = printed_key(seed(monkeypatch))
    operator = User.objects.get(username="operator")
    benchmark = Benchmark.objects.get(name="Abstract summaries")
    start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk)
    calls = dict(README_CALL.findall(README.read_text()))
    assert set(calls) == {"benchmark/search", "test/search"}
    client = Client()
    for path, body in calls.items():
        response = client.post(
            f"/api/v5/artifacts/{path}",
            data=body,
            content_type="application/json",
            headers={"X-Api-Key": key},
        )
        assert response.status_code == 200, response.content
        assert response.json()["total_count"] >= 1, (path, body)


def test_the_readme_imports_into_an_eval_of_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    seed(monkeypatch)
    match = re.search(r'import_benchmark \S+ --eval "([^"]+)"', README.read_text())
    assert match
    assert Eval.objects.filter(name=match.group(1)).exists()
