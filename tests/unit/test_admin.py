"""The admin: every page loads with data, lists stay cheap, services do the writes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from tests import factories
from tests_app.api.authentication import user_for_key
from tests_app.models import ApiKey, Benchmark, Target, Test, TestRun

pytestmark = pytest.mark.django_db

User = get_user_model()

KEY_IN_MESSAGE = re.compile(r"is: ([A-Za-z0-9]{8}\.[A-Za-z0-9]+)")


def admin_url(obj_or_model: Any, view: str, *args: Any) -> str:
    meta = obj_or_model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)


@pytest.fixture
def world(research: Any, operator: Any, settings: Any, tmp_path: Any) -> dict[str, Model]:
    """One row of every model, linked the way a finished, graded test links them."""
    settings.MEDIA_ROOT = tmp_path
    benchmark = factories.make_benchmark(department=research, entries=2, turns=3)
    test = factories.TestFactory.create(benchmark=benchmark, created_by=operator, total_runs=2)
    entry = benchmark.entries.first()
    run = factories.TestRunFactory.create(test=test, entry=entry, ordinal=1, cycle=1)
    invocation = factories.TestInvocationFactory.create(run=run, test=test, actor=operator)
    step = factories.ReplayStepFactory.create(invocation=invocation, turn=1, output="Answer one.")
    grade = factories.GradeFactory.create(invocation=invocation, feedback="Matches the reference.")
    upload = factories.UploadFactory.create(test=test, file_name="export-1.zip")
    run_all = factories.RunAllFactory.create(test=test, started_by=operator)
    api_key, _ = factories.make_api_key(operator, name="laptop")
    return {
        "department": research,
        "membership": operator.memberships.get(),
        "rubric": benchmark.eval.rubric,
        "eval": benchmark.eval,
        "benchmark": benchmark,
        "target": benchmark.default_target,
        "entry": entry,
        "test": test,
        "run": run,
        "invocation": invocation,
        "step": step,
        "grade": grade,
        "upload": upload,
        "run_all": run_all,
        "api_key": api_key,
        "user": operator,
    }


def test_every_project_model_is_registered() -> None:
    registered = {model._meta.label for model in admin.site._registry}
    from django.apps import apps

    for model in apps.get_app_config("tests_app").get_models():
        if model._meta.managed and not model._meta.label.endswith("View"):
            assert model._meta.label in registered, model._meta.label
    # The library's own key model is not used here and must not mislead operators.
    assert "rest_framework_api_key.APIKey" not in registered


def test_every_changelist_and_change_page_loads(
    admin_client: Client, world: dict[str, Any]
) -> None:
    for name, obj in world.items():
        changelist = admin_client.get(admin_url(obj, "changelist"))
        assert changelist.status_code == 200, name
        # The row is listed: its change link is on the page.
        assert admin_url(obj, "change", obj.pk) in changelist.content.decode(), name

        change = admin_client.get(admin_url(obj, "change", obj.pk))
        assert change.status_code == 200, name
        assert str(obj) in change.content.decode(), name


def test_test_page_shows_its_runs_invocations_and_link_to_all(
    admin_client: Client, world: dict[str, Any]
) -> None:
    test, run, invocation = world["test"], world["run"], world["invocation"]
    page = admin_client.get(admin_url(test, "change", test.pk)).content.decode()
    assert admin_url(run, "change", run.pk) in page
    assert admin_url(invocation, "change", invocation.pk) in page
    assert "export-1.zip" in page
    assert f"{admin_url(TestRun, 'changelist')}?test={test.pk}" in page

    # The link's filter works: only this test's runs are listed.
    other_run = factories.TestRunFactory.create(ordinal=1)
    listing = admin_client.get(admin_url(TestRun, "changelist"), {"test": test.pk}).content.decode()
    assert admin_url(run, "change", run.pk) in listing
    assert admin_url(other_run, "change", other_run.pk) not in listing


def test_invocation_page_shows_steps_and_grades(
    admin_client: Client, world: dict[str, Any]
) -> None:
    invocation = world["invocation"]
    page = admin_client.get(admin_url(invocation, "change", invocation.pk)).content.decode()
    assert "Answer one." in page
    assert "Matches the reference." in page


def test_run_inline_is_bounded_to_the_newest(admin_client: Client, research: Any) -> None:
    benchmark = factories.make_benchmark(department=research, entries=1)
    test = factories.TestFactory.create(benchmark=benchmark)
    entry = benchmark.entries.get()
    runs = [
        factories.TestRunFactory.create(test=test, entry=entry, cycle=1, ordinal=ordinal)
        for ordinal in range(1, 26)
    ]
    page = admin_client.get(admin_url(test, "change", test.pk)).content.decode()
    shown = [run for run in runs if admin_url(run, "change", run.pk) in page]
    assert shown == runs[5:]  # ordinals 6..25: the newest 20


def test_status_fields_are_not_editable(admin_client: Client, world: dict[str, Any]) -> None:
    for name in ("test", "run", "invocation", "grade"):
        obj = world[name]
        page = admin_client.get(admin_url(obj, "change", obj.pk)).content.decode()
        assert 'name="status"' not in page, name
        # A forged POST cannot change it either.
        response = admin_client.post(admin_url(obj, "change", obj.pk), {"status": "completed"})
        assert response.status_code == 403, name
        obj.refresh_from_db()
        assert obj.status != "completed", name
    assert admin_client.get(admin_url(Test, "add")).status_code == 403


def test_test_changelist_query_count_is_bounded(
    admin_client: Client, research: Any, django_assert_max_num_queries: Any
) -> None:
    # Distinct benchmarks, evals and creators per row: an N+1 would show up as 60+ queries.
    # Users without a password: hashing 60 passwords would dominate the test's run time.
    creators = User.objects.bulk_create([User(username=f"creator{index}") for index in range(60)])
    for creator in creators:
        benchmark = factories.make_benchmark(department=research, entries=1)
        factories.TestFactory.create(benchmark=benchmark, created_by=creator)
    with django_assert_max_num_queries(12):
        response = admin_client.get(admin_url(Test, "changelist"))
    assert response.status_code == 200
    assert response.content.decode().count("/change/") >= 50  # one page of rows was rendered


@pytest.mark.parametrize("model_name", ["testrun", "testinvocation", "replaystep", "grade"])
def test_large_changelists_query_count_is_bounded(
    admin_client: Client, research: Any, django_assert_max_num_queries: Any, model_name: str
) -> None:
    for _ in range(30):
        factories.GradeFactory.create(invocation=factories.ReplayStepFactory.create().invocation)
    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse(f"admin:tests_app_{model_name}_changelist"))
    assert response.status_code == 200
    assert response.content.decode().count(f"/tests_app/{model_name}/") >= 30


def test_api_key_add_shows_the_secret_once_and_stores_only_the_hash(
    admin_client: Client, operator: Any
) -> None:
    add_page = admin_client.get(admin_url(ApiKey, "add")).content.decode()
    assert 'name="user"' in add_page
    assert 'name="name"' in add_page
    assert 'name="revoked"' not in add_page

    response = admin_client.post(
        admin_url(ApiKey, "add"), {"user": operator.pk, "name": "notebook"}, follow=True
    )
    page = response.content.decode()
    match = KEY_IN_MESSAGE.search(page)
    assert match, page
    raw_key = match.group(1)

    api_key = ApiKey.objects.get(name="notebook")
    assert api_key.user == operator
    found = user_for_key(raw_key)
    assert found is not None
    assert found[1] == api_key
    stored = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert all(raw_key not in str(value) for value in stored.values())
    assert raw_key.split(".")[1] not in stored["hashed_key"]

    # Never again: not on the key's page, not on the list, not on the next page load.
    for url in (admin_url(api_key, "change", api_key.pk), admin_url(ApiKey, "changelist")):
        assert raw_key not in admin_client.get(url).content.decode()


def test_api_key_revoke_action(admin_client: Client, operator: Any) -> None:
    _kept, kept_raw = factories.make_api_key(operator, name="kept")
    dropped, dropped_raw = factories.make_api_key(operator, name="dropped")
    admin_client.post(
        admin_url(ApiKey, "changelist"),
        {"action": "revoke_selected", "_selected_action": [str(dropped.pk)]},
    )
    assert user_for_key(dropped_raw) is None
    assert user_for_key(kept_raw) is not None


def target_form(department: Any, **fields: Any) -> dict[str, Any]:
    return {
        "name": "Local model",
        "department": department.pk,
        "kind": "openai",
        "model": "qwen2.5:7b",
        "base_url": "http://127.0.0.1:11434/v1",
        "api_key_env": "OLLAMA_API_KEY",
        "temperature": 0,
        "max_tokens": "",
        "seed": 7,
        "timeout_s": 30,
        "max_retries": 2,
        "price_in": "0.15",
        "price_out": "0.60",
        **fields,
    }


def test_target_form_validates_like_the_client_and_refuses_a_secret(
    admin_client: Client, research: Any
) -> None:
    # A key pasted where the variable's name goes.
    response = admin_client.post(
        admin_url(Target, "add"), target_form(research, api_key_env="sk-proj-abc123")
    )
    assert response.status_code == 200
    assert "Must be the NAME of an environment variable." in response.content.decode()
    # An openai target without a model cannot be called.
    response = admin_client.post(admin_url(Target, "add"), target_form(research, model=""))
    assert response.status_code == 200
    assert "A model name is required." in response.content.decode()
    assert not Target.objects.exists()

    response = admin_client.post(admin_url(Target, "add"), target_form(research))
    assert response.status_code == 302
    target = Target.objects.get()
    assert (target.department, target.kind, target.model, target.api_key_env, target.seed) == (
        research,
        "openai",
        "qwen2.5:7b",
        "OLLAMA_API_KEY",
        7,
    )
    assert (str(target.price_in), str(target.price_out)) == ("0.150000", "0.600000")


def test_benchmark_form_takes_a_default_target_of_its_department(
    admin_client: Client, world: dict[str, Any], support: Any
) -> None:
    benchmark = world["benchmark"]
    foreign = factories.TargetFactory.create(department=support, name="Support's model")
    own = factories.TargetFactory.create(
        department=benchmark.eval.department, name="Research model"
    )
    data = {
        "name": benchmark.name,
        "eval": benchmark.eval_id,
        "default_target": foreign.pk,
        "runs_per_entry": 1,
        "replay_mode": "autoregressive",
        "entries-TOTAL_FORMS": 0,
        "entries-INITIAL_FORMS": 0,
        "entries-MIN_NUM_FORMS": 0,
        "entries-MAX_NUM_FORMS": 1000,
    }
    response = admin_client.post(admin_url(benchmark, "change", benchmark.pk), data)
    assert response.status_code == 200
    assert "belongs to another department than the eval" in response.content.decode()
    benchmark.refresh_from_db()
    assert benchmark.default_target != foreign

    data["default_target"] = own.pk
    response = admin_client.post(admin_url(benchmark, "change", benchmark.pk), data)
    assert response.status_code == 302
    benchmark.refresh_from_db()
    assert benchmark.default_target == own


def test_test_page_shows_the_target_snapshot(admin_client: Client, world: dict[str, Any]) -> None:
    test = world["test"]
    page = admin_client.get(admin_url(test, "change", test.pk)).content.decode()
    assert "s it ran (snapshot at start)" in page
    assert f"&quot;id&quot;: &quot;{test.target_id}&quot;" in page


def test_benchmark_with_many_entries_links_instead_of_inlining(
    admin_client: Client, research: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=101, turns=1)
    page = admin_client.get(admin_url(benchmark, "change", benchmark.pk)).content.decode()
    assert "entries-TOTAL_FORMS" not in page
    assert f"?benchmark={benchmark.pk}" in page
    assert "Open the 101 entries" in page

    small = factories.make_benchmark(department=research, entries=2, turns=1)
    page = admin_client.get(admin_url(small, "change", small.pk)).content.decode()
    assert 'name="entries-TOTAL_FORMS" value="2"' in page


def test_entry_form_validates_messages(admin_client: Client, world: dict[str, Any]) -> None:
    entry = world["entry"]
    response = admin_client.post(
        admin_url(entry, "change", entry.pk),
        {
            "benchmark": entry.benchmark_id,
            "position": entry.position,
            "title": "edited",
            "messages": '[{"role": "assistant", "content": "no user turn"}]',
        },
    )
    assert response.status_code == 200
    assert "no user turn" in response.content.decode()
    entry.refresh_from_db()
    assert entry.title != "edited"


def test_department_add_page_prepopulates_slug(admin_client: Client) -> None:
    page = admin_client.get(reverse("admin:tests_app_department_add")).content.decode()
    assert "prepopulated" in page
    assert '"#id_slug"' in page or "id_slug" in page


def test_search_by_pasted_test_id(admin_client: Client, world: dict[str, Any]) -> None:
    test = world["test"]
    other = factories.TestFactory.create(benchmark=world["benchmark"])
    page = admin_client.get(admin_url(Test, "changelist"), {"q": str(test.pk)}).content.decode()
    assert admin_url(test, "change", test.pk) in page
    assert admin_url(other, "change", other.pk) not in page


def test_archive_and_unarchive_actions_go_through_the_service(
    admin_client: Client, world: dict[str, Any]
) -> None:
    pytest.importorskip(
        "tests_app.services.archiving",
        reason="services/archiving.py (the lifecycle work) is not in the tree yet",
    )
    test = world["test"]
    other = factories.TestFactory.create(benchmark=world["benchmark"])
    changelist = admin_url(Test, "changelist")

    response = admin_client.post(
        changelist,
        {"action": "archive_tests", "_selected_action": [str(test.pk)]},
        follow=True,
    )
    assert "Archived 1 test(s)" in response.content.decode()
    test.refresh_from_db()
    other.refresh_from_db()
    assert test.is_archived
    assert not other.is_archived

    response = admin_client.post(
        changelist,
        {"action": "unarchive_tests", "_selected_action": [str(test.pk), str(other.pk)]},
        follow=True,
    )
    assert "Unarchived 1 test(s); 1 already were." in response.content.decode()
    test.refresh_from_db()
    assert not test.is_archived


def test_benchmark_changelist_lists_entry_counts(
    admin_client: Client, world: dict[str, Any]
) -> None:
    page = admin_client.get(admin_url(Benchmark, "changelist")).content.decode()
    assert world["benchmark"].name in page
    assert '<td class="field-entry_count">2</td>' in page


def test_login_page_logs_in_and_reports_bad_credentials(client: Client, operator: Any) -> None:
    page = client.get("/accounts/login/?next=/tests/")
    assert page.status_code == 200
    assert 'name="username"' in page.content.decode()
    assert 'value="/tests/"' in page.content.decode()

    bad = client.post("/accounts/login/", {"username": "operator", "password": "wrong"})
    assert bad.status_code == 200
    assert "Please enter a correct username and password" in bad.content.decode()
    assert "_auth_user_id" not in client.session

    good = client.post(
        "/accounts/login/",
        {"username": "operator", "password": "correct-horse-battery", "next": "/tests/"},
    )
    assert good.status_code == 302
    assert good["Location"] == "/tests/"
    assert client.session["_auth_user_id"] == str(operator.pk)


def test_user_page_shows_memberships_and_keys_without_secrets(
    admin_client: Client, world: dict[str, Any]
) -> None:
    user, api_key = world["user"], world["api_key"]
    page = admin_client.get(admin_url(user, "change", user.pk)).content.decode()
    assert 'name="memberships-0-role"' in page
    assert api_key.prefix in page
    assert api_key.hashed_key not in page


def test_results_cannot_be_deleted_from_the_admin(
    admin_client: Client, world: dict[str, Any]
) -> None:
    for name in ("test", "run", "invocation", "step", "grade", "upload"):
        obj = world[name]
        response = admin_client.post(admin_url(obj, "delete", obj.pk), {"post": "yes"})
        assert response.status_code == 403, name
        assert type(obj).objects.filter(pk=obj.pk).exists(), name
    listing = admin_client.get(admin_url(Test, "changelist")).content.decode()
    assert "delete_selected" not in listing
    assert "archive_tests" in listing


def test_upload_page_links_to_the_api_download(admin_client: Client, world: dict[str, Any]) -> None:
    upload = world["upload"]
    page = admin_client.get(admin_url(upload, "change", upload.pk)).content.decode()
    assert f'href="/api/v5/uploads/{upload.pk}/download"' in page


def test_add_pages_of_editable_models_load(admin_client: Client) -> None:
    for model_name in (
        "auth_user",
        "tests_app_department",
        "tests_app_membership",
        "tests_app_rubric",
        "tests_app_eval",
        "tests_app_benchmark",
        "tests_app_benchmarkentry",
        "tests_app_target",
        "tests_app_apikey",
    ):
        page = admin_client.get(reverse(f"admin:{model_name}_add"))
        assert page.status_code == 200, model_name
        assert "<form" in page.content.decode(), model_name
    for model_name in ("testrun", "testinvocation", "replaystep", "grade", "upload"):
        assert admin_client.get(reverse(f"admin:tests_app_{model_name}_add")).status_code == 403


def test_operator_flow_add_benchmark_with_entries(admin_client: Client, research: Any) -> None:
    eval_ = factories.EvalFactory.create(department=research)
    conversation = factories.conversation(3)
    response = admin_client.post(
        admin_url(Benchmark, "add"),
        {
            "name": "Handmade",
            "eval": eval_.pk,
            "runs_per_entry": 2,
            "replay_mode": "teacher_forced",
            "default_target": factories.TargetFactory.create(department=research).pk,
            "entries-TOTAL_FORMS": 1,
            "entries-INITIAL_FORMS": 0,
            "entries-MIN_NUM_FORMS": 0,
            "entries-MAX_NUM_FORMS": 1000,
            "entries-0-position": 1,
            "entries-0-title": "First",
            "entries-0-messages": json.dumps(conversation),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    benchmark = Benchmark.objects.get(name="Handmade")
    assert (benchmark.eval, benchmark.runs_per_entry, benchmark.replay_mode) == (
        eval_,
        2,
        "teacher_forced",
    )
    entry = benchmark.entries.get()
    assert (entry.position, entry.title, entry.turns) == (1, "First", 3)
    assert entry.messages == conversation


def test_user_page_saves_with_its_inlines(admin_client: Client, world: dict[str, Any]) -> None:
    user, membership = world["user"], world["membership"]
    response = admin_client.post(
        admin_url(user, "change", user.pk),
        {
            "username": user.username,
            "first_name": "Renamed",
            "last_name": user.last_name,
            "email": user.email,
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "10:00:00",
            "memberships-TOTAL_FORMS": 1,
            "memberships-INITIAL_FORMS": 1,
            "memberships-MIN_NUM_FORMS": 0,
            "memberships-MAX_NUM_FORMS": 1000,
            "memberships-0-id": membership.pk,
            "memberships-0-user": user.pk,
            "memberships-0-department": membership.department_id,
            "memberships-0-role": "viewer",
            "api_keys-TOTAL_FORMS": 1,
            "api_keys-INITIAL_FORMS": 1,
            "api_keys-MIN_NUM_FORMS": 0,
            "api_keys-MAX_NUM_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    user.refresh_from_db()
    membership.refresh_from_db()
    assert user.first_name == "Renamed"
    assert membership.role == "viewer"
    assert ApiKey.objects.get(pk=world["api_key"].pk).revoked is False
