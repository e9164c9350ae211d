"""Operators (not staff) in the admin: the rows of the departments they operate, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from django.urls import reverse

from tests import factories
from tests_app.models import Benchmark, BenchmarkEntry, Department, Eval, Membership, Rubric, Test

pytestmark = pytest.mark.django_db

User = get_user_model()


def admin_url(obj_or_model: Any, view: str, *args: Any) -> str:
    meta = obj_or_model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def two_departments(research: Any, support: Any) -> dict[str, Any]:
    ours = factories.make_benchmark(department=research, name="Ours bench")
    theirs = factories.make_benchmark(department=support, name="Theirs bench")
    return {
        "ours": ours,
        "theirs": theirs,
        "our_test": factories.TestFactory.create(benchmark=ours),
        "their_test": factories.TestFactory.create(benchmark=theirs),
    }


def test_an_operator_logs_into_the_admin_and_a_viewer_does_not(
    client: Client, operator: Any, viewer: Any
) -> None:
    login = reverse("admin:login")
    response = client.post(
        login,
        {"username": "operator", "password": "correct-horse-battery", "next": "/admin/"},
    )
    assert (response.status_code, response["Location"]) == (302, "/admin/")
    index = client.get("/admin/").content.decode()
    assert "Benchmarks" in index
    assert "Users" not in index  # staff only
    assert "API keys" not in index

    viewer_client = Client()
    response = viewer_client.post(
        login, {"username": "viewer", "password": "correct-horse-battery", "next": "/admin/"}
    )
    assert response.status_code == 200  # the form again, with its error
    assert "staff account" in response.content.decode() or "correct username" in (
        response.content.decode()
    )
    assert viewer_client.get("/admin/").status_code == 302


def test_the_pages_link_to_the_admin_for_operators_only(operator: Any, viewer: Any) -> None:
    assert 'href="/admin/"' in logged_in(operator).get("/tests/").content.decode()
    assert 'href="/admin/"' not in logged_in(viewer).get("/tests/").content.decode()


def test_an_operator_sees_only_their_departments_rows(
    operator: Any, two_departments: dict[str, Any]
) -> None:
    client = logged_in(operator)
    ours, theirs = two_departments["ours"], two_departments["theirs"]
    listing = client.get(admin_url(Benchmark, "changelist")).content.decode()
    assert "Ours bench" in listing
    assert "Theirs bench" not in listing
    tests = client.get(admin_url(Test, "changelist")).content.decode()
    assert str(two_departments["our_test"].pk)[:8] in tests
    assert str(two_departments["their_test"].pk)[:8] not in tests
    # The department filter names only their departments.
    assert "Support" not in client.get(admin_url(Eval, "changelist")).content.decode()
    # Another department's rows are "not found" (a redirect to the index with a message).
    for obj in (theirs, theirs.eval, theirs.default_target, two_departments["their_test"]):
        response = client.get(admin_url(obj, "change", obj.pk))
        assert response.status_code == 302, obj
    assert client.get(admin_url(ours, "change", ours.pk)).status_code == 200


def test_an_operator_edits_their_catalogue_but_not_results_rubrics_or_departments(
    operator: Any, research: Any, two_departments: dict[str, Any]
) -> None:
    client = logged_in(operator)
    ours = two_departments["ours"]
    response = client.post(
        admin_url(ours, "change", ours.pk),
        {
            "name": "Ours renamed",
            "eval": ours.eval_id,
            "default_target": ours.default_target_id,
            "runs_per_entry": 2,
            "replay_mode": "autoregressive",
            "entries-TOTAL_FORMS": "0",
            "entries-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    ours.refresh_from_db()
    assert (ours.name, ours.runs_per_entry) == ("Ours renamed", 2)

    rubric = ours.eval.rubric
    page = client.get(admin_url(rubric, "change", rubric.pk)).content.decode()
    assert 'name="name"' not in page  # shown, read-only
    assert client.post(admin_url(rubric, "change", rubric.pk), {"name": "x"}).status_code == 403
    assert client.get(admin_url(Rubric, "add")).status_code == 403
    assert client.get(admin_url(Department, "add")).status_code == 403
    assert client.get(admin_url(Membership, "changelist")).status_code == 403
    test = two_departments["our_test"]
    assert client.get(admin_url(test, "change", test.pk)).status_code == 200
    assert client.post(admin_url(test, "change", test.pk), {}).status_code == 403


def test_a_forged_form_cannot_move_a_benchmark_to_another_department(
    operator: Any, two_departments: dict[str, Any]
) -> None:
    client = logged_in(operator)
    ours, theirs = two_departments["ours"], two_departments["theirs"]
    response = client.post(
        admin_url(ours, "change", ours.pk),
        {
            "name": "Moved",
            "eval": theirs.eval_id,
            "default_target": theirs.default_target_id,
            "runs_per_entry": 1,
            "replay_mode": "autoregressive",
            "entries-TOTAL_FORMS": "0",
            "entries-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    ours.refresh_from_db()
    assert ours.eval_id != theirs.eval_id
    # Nor add an entry to the other department's benchmark.
    response = client.post(
        admin_url(BenchmarkEntry, "add"),
        {
            "benchmark": theirs.pk,
            "position": 99,
            "title": "sneaky",
            "messages": '[{"role": "user", "content": "hi"}]',
        },
    )
    assert response.status_code == 200
    assert not BenchmarkEntry.objects.filter(title="sneaky").exists()


def test_an_operator_of_nothing_but_a_viewer_membership_has_no_admin(
    viewer: Any, two_departments: dict[str, Any]
) -> None:
    client = logged_in(viewer)
    response = client.get(admin_url(Benchmark, "changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def jsonl(*lines: Any) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


GOOD_LINE = {
    "title": "Refund",
    "messages": [
        {"role": "user", "content": "Can I return it?"},
        {"role": "assistant", "content": "Yes, within 30 days."},
    ],
}


def test_import_jsonl_in_the_admin_makes_a_benchmark_like_the_command(
    operator: Any, research: Any
) -> None:
    evaluation = factories.EvalFactory.create(name="Refund handling", department=research)
    client = logged_in(operator)
    listing = client.get(admin_url(Benchmark, "changelist")).content.decode()
    assert 'id="import-jsonl"' in listing
    url = reverse("admin:tests_app_benchmark_import")
    assert client.get(url).status_code == 200
    upload = SimpleUploadedFile("refunds v2.jsonl", jsonl(GOOD_LINE, "", GOOD_LINE))
    response = client.post(url, {"file": upload, "eval": evaluation.pk}, follow=True)
    benchmark = Benchmark.objects.get(eval=evaluation)
    assert benchmark.name == "refunds v2"
    assert [entry.position for entry in benchmark.entries.order_by("position")] == [1, 2]
    page = response.content.decode()
    assert "Imported benchmark &#x27;refunds v2&#x27;" in page
    assert "2 entries" in page


def test_import_jsonl_reports_every_bad_line_and_imports_nothing(
    operator: Any, research: Any
) -> None:
    evaluation = factories.EvalFactory.create(department=research)
    client = logged_in(operator)
    upload = SimpleUploadedFile(
        "bad.jsonl", jsonl(GOOD_LINE, "{not json", {"messages": []}, GOOD_LINE)
    )
    response = client.post(
        reverse("admin:tests_app_benchmark_import"),
        {"file": upload, "eval": evaluation.pk, "name": "Bad"},
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "2 bad line(s); nothing was imported." in page
    assert "line 2: not valid JSON" in page
    assert "line 3: &quot;messages&quot; is empty" in page
    assert not Benchmark.objects.filter(name="Bad").exists()
    upload = SimpleUploadedFile("latin.jsonl", "caf\xe9".encode("latin-1"))
    page = client.post(
        reverse("admin:tests_app_benchmark_import"), {"file": upload, "eval": evaluation.pk}
    ).content.decode()
    assert "not UTF-8 text" in page


def test_import_jsonl_offers_only_the_operators_evals(
    operator: Any, research: Any, support: Any
) -> None:
    theirs = factories.EvalFactory.create(name="Their eval", department=support)
    factories.EvalFactory.create(name="Our eval", department=research)
    client = logged_in(operator)
    url = reverse("admin:tests_app_benchmark_import")
    page = client.get(url).content.decode()
    assert "Our eval" in page
    assert "Their eval" not in page
    upload = SimpleUploadedFile("x.jsonl", jsonl(GOOD_LINE))
    response = client.post(url, {"file": upload, "eval": theirs.pk})
    assert "Select a valid choice" in response.content.decode()
    assert not Benchmark.objects.filter(eval=theirs).exists()


def test_no_admin_shows_an_operator_another_departments_rows(
    operator: Any, outsider: Any, support: Any
) -> None:
    """Every model admin, including ones added later: rows of Support (which the Research
    operator does not belong to) are in none of the querysets the operator's admin reads."""
    benchmark = factories.make_benchmark(department=support, entries=1)
    test = factories.TestFactory.create(benchmark=benchmark, created_by=outsider)
    run = factories.TestRunFactory.create(test=test, entry=benchmark.entries.get(), ordinal=1)
    invocation = factories.TestInvocationFactory.create(run=run, test=test, actor=outsider)
    factories.ReplayStepFactory.create(invocation=invocation, turn=1)
    factories.GradeFactory.create(invocation=invocation)
    factories.RunAllFactory.create(test=test, started_by=outsider)
    factories.make_api_key(outsider)
    request = RequestFactory().get("/admin/")
    request.user = operator
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != "tests_app" or model is Rubric:
            continue  # rubrics are shared by every department
        rows = model_admin.get_queryset(request)
        if not model_admin.has_view_permission(request):
            continue
        if model is Department:
            rows = rows.filter(pk=support.pk)  # they see Research, their own
        assert not rows.exists(), model.__name__


def test_autocomplete_offers_an_operator_only_their_departments_rows(
    operator: Any, two_departments: dict[str, Any]
) -> None:
    client = logged_in(operator)
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "tests_app", "model_name": "benchmark", "field_name": "eval", "term": ""},
    )
    assert response.status_code == 200
    ids = {item["id"] for item in response.json()["results"]}
    assert ids == {str(two_departments["ours"].eval_id)}
