"""The staff pages through Django's test client: what each user sees, and that forms change data."""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests import factories
from tests_app.actors import Actor
from tests_app.models import Grade, Test, TestInvocation, TestRun
from tests_app.pages import charts
from tests_app.pages.reads import word_diff
from tests_app.services.claiming import claim_next_run
from tests_app.services.ending import end_invocation
from tests_app.services.refresh import refresh_analytics_views
from tests_app.services.running import request_replay
from tests_app.services.starting import start_test

pytestmark = pytest.mark.django_db


def messages_of(html: str) -> str:
    """The text of the page's messages (ids elsewhere in the page may contain any digits)."""
    found = re.search(r'<ul class="messages"[^>]*>(.*?)</ul>', html, re.DOTALL)
    return found.group(1) if found else ""


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def detail_url(test: Test) -> str:
    return f"/tests/{test.pk}/"


def replayed_invocation(
    test: Test, user: Any, capture: Any, *, score: float | None = None
) -> TestInvocation:
    """Claim and replay the next run of ``test`` (inline), optionally end it with a score."""
    actor = Actor(user=user)
    claim = claim_next_run(actor=actor, test_id=test.pk)
    with capture(execute=True):
        request_replay(
            actor=actor, test_id=test.pk, invocation_id=claim.invocation.pk, run_id=claim.run.pk
        )
    if score is not None:
        end_invocation(
            actor=actor,
            test_id=test.pk,
            invocation_id=claim.invocation.pk,
            run_id=claim.run.pk,
            score=score,
        )
    return TestInvocation.objects.get(pk=claim.invocation.pk)


@pytest.fixture
def started(benchmark: Any, operator: Any) -> Test:
    return start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk)


def test_pages_require_login(started: Test) -> None:
    for url in ("/tests/", detail_url(started), "/benchmarks/", "/dashboard/"):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")


def test_search_lists_visible_tests_with_facets(
    started: Test, support: Any, staff: Any, viewer: Any
) -> None:
    other = factories.make_benchmark(department=support, name="Support bench")
    start_test(actor=Actor(user=staff), benchmark_id=other.pk)

    page = logged_in(staff).get("/tests/").content.decode()
    assert started.benchmark.name in page
    assert "Support bench" in page
    assert "1\u20132 of 2 tests" in page
    # One facet option per eval and per department, each counting one test.
    assert page.count('data-facet="eval"') == 2
    assert page.count('data-facet="department"') == 2

    filtered = logged_in(staff).get("/tests/", {"eval": str(started.eval_id)}).content.decode()
    assert started.benchmark.name in filtered
    assert "Support bench" not in filtered
    assert "1\u20131 of 1 test" in filtered
    assert 'class="facet-option selected"' in filtered

    malformed = logged_in(staff).get("/tests/", {"eval": "not-an-id"}).content.decode()
    assert "Some filters are not valid" in malformed

    viewer_page = logged_in(viewer).get("/tests/").content.decode()
    assert started.benchmark.name in viewer_page
    assert "Support bench" not in viewer_page


def test_search_archived_toggle(started: Test, operator: Any) -> None:
    Test.objects.filter(pk=started.pk).update(is_archived=True)
    client = logged_in(operator)
    assert "No active tests" in client.get("/tests/").content.decode()
    archived = client.get("/tests/", {"archived": "archived"}).content.decode()
    assert started.benchmark.name in archived
    assert "archived</span>" in archived


def test_detail_shows_header_and_controls_to_an_operator(started: Test, operator: Any) -> None:
    response = logged_in(operator).get(detail_url(started))
    page = response.content.decode()
    assert response.status_code == 200
    for text in (
        started.benchmark.name,
        started.eval.name,
        started.eval.rubric.name,
        started.department.name,
    ):
        assert text in page
    assert 'id="control-next"' in page
    assert 'id="control-archive"' in page
    assert 'class="chart chart-status"' in page
    assert "pending 2" in page  # the chart's legend: both runs pending
    assert f'data-websocket-path="/ws/tests/{started.pk}/"' in page


def test_viewer_sees_the_test_without_controls(started: Test, viewer: Any) -> None:
    page = logged_in(viewer).get(detail_url(started)).content.decode()
    assert started.benchmark.name in page
    assert 'id="control-next"' not in page
    assert 'id="control-archive"' not in page
    assert "regrade-form" not in page
    assert 'id="control-export"' in page  # viewers may export


def test_outsider_gets_404(started: Test, outsider: Any) -> None:
    client = logged_in(outsider)
    assert client.get(detail_url(started)).status_code == 404
    response = client.post(f"/tests/{started.pk}/next/")
    assert response.status_code == 404
    assert not TestInvocation.objects.filter(test=started).exists()
    assert client.get(f"/tests/{uuid.uuid4()}/").status_code == 404


def test_next_form_claims_a_run(started: Test, operator: Any) -> None:
    client = logged_in(operator)
    response = client.post(f"/tests/{started.pk}/next/")
    invocation = TestInvocation.objects.get(test=started)
    assert response.status_code == 302
    assert response["Location"] == f"/tests/{started.pk}/?invocation={invocation.pk}"
    assert invocation.status == TestInvocation.Status.CREATED
    assert invocation.client == "browser"
    assert invocation.run.status == TestRun.Status.CLAIMED
    page = client.get(response["Location"]).content.decode()
    assert 'id="control-run"' in page
    assert 'id="control-stop"' in page  # something is open, so it can be stopped
    assert "Claimed run 1 of 2" in page


def test_controls_take_only_post_and_only_their_names(started: Test, operator: Any) -> None:
    client = logged_in(operator)
    response = client.get(f"/tests/{started.pk}/next/")
    assert (response.status_code, response["Location"]) == (302, detail_url(started))
    assert client.post(f"/tests/{started.pk}/delete/").status_code == 404
    assert client.get(f"/tests/{started.pk}/delete/").status_code == 404
    assert not TestInvocation.objects.filter(test=started).exists()
    started.refresh_from_db()
    assert (started.status, started.is_archived) == (Test.Status.PENDING, False)


def test_viewer_cannot_operate_through_the_forms(started: Test, viewer: Any) -> None:
    client = logged_in(viewer)
    response = client.post(f"/tests/{started.pk}/next/", follow=True)
    assert "operators only" in response.content.decode()
    assert not TestInvocation.objects.filter(test=started).exists()
    client.post(f"/tests/{started.pk}/archive/", {"archived": "on"})
    started.refresh_from_db()
    assert started.is_archived is False


def test_run_then_end_with_grade_shows_transcript_and_grade(
    started: Test, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/next/")
    invocation = TestInvocation.objects.get(test=started)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            f"/tests/{started.pk}/run/",
            {"invocation_id": invocation.pk, "run_id": invocation.run_id},
        )
    invocation.refresh_from_db()
    assert invocation.status == TestInvocation.Status.REPLAYED
    page = client.get(f"{detail_url(started)}?invocation={invocation.pk}").content.decode()
    assert page.count('class="turn"') == 3
    assert "Question 1?" in page
    assert "Answer 3." in page
    assert "matches reference" in page
    assert 'id="control-end"' in page
    assert 'id="invocations-table"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/tests/{started.pk}/end/",
            {"invocation_id": invocation.pk, "run_id": invocation.run_id},
        )
    assert response.status_code == 302
    invocation.refresh_from_db()
    assert invocation.status == TestInvocation.Status.ENDED
    grade = Grade.objects.get(invocation=invocation)
    assert grade.status == Grade.Status.DONE
    page = client.get(response["Location"]).content.decode()
    assert grade.get_source_display() in page
    assert f"<strong>{grade.score:.2f}</strong>" in page
    assert "Provenance" in page


def test_human_regrade_keeps_the_earlier_grade(
    started: Test, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    invocation = replayed_invocation(
        started, operator, django_capture_on_commit_callbacks, score=0.9
    )
    response = logged_in(operator).post(
        f"/tests/{started.pk}/regrade/",
        {
            "invocation_id": invocation.pk,
            "score": "0.25",
            "passed": "false",
            "feedback": "Turn 2 is wrong.",
            "reason": "The agent graded too kindly.",
        },
        follow=True,
    )
    grades = list(Grade.objects.filter(invocation=invocation).order_by("created_at"))
    assert [grade.source for grade in grades] == ["agent", "human"]
    human = grades[1]
    assert (human.score, human.passed, human.actor) == (0.25, False, operator)
    assert human.reason == "The agent graded too kindly."
    assert human.provenance["overrides_grade_id"] == str(grades[0].pk)
    run = TestRun.objects.get(pk=invocation.run_id)
    assert (run.score, run.passed) == (0.25, False)
    started.refresh_from_db()
    assert (started.graded_runs, started.passed_runs) == (1, 0)
    page = response.content.decode()
    assert "The agent graded too kindly." in page
    assert "Turn 2 is wrong." in page


def test_regrade_needs_a_reason_and_an_operator(
    started: Test, operator: Any, viewer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    invocation = replayed_invocation(
        started, operator, django_capture_on_commit_callbacks, score=0.9
    )
    form = {"invocation_id": invocation.pk, "score": "0.1", "passed": "false", "reason": ""}
    page = logged_in(operator).post(f"/tests/{started.pk}/regrade/", form, follow=True)
    assert "The regrade was not saved" in page.content.decode()
    page = logged_in(viewer).post(
        f"/tests/{started.pk}/regrade/", {**form, "reason": "Because."}, follow=True
    )
    assert "operators only" in page.content.decode()
    assert list(Grade.objects.filter(invocation=invocation).values_list("source", flat=True)) == [
        "agent"
    ]


def test_stop_and_archive_forms(started: Test, operator: Any) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/next/")
    invocation = TestInvocation.objects.get(test=started)
    client.post(f"/tests/{started.pk}/stop/", {"invocation_id": invocation.pk})
    started.refresh_from_db()
    invocation.refresh_from_db()
    assert started.status == Test.Status.STOPPED
    assert invocation.status == TestInvocation.Status.STOPPED
    page = client.get(detail_url(started)).content.decode()
    assert 'id="control-next"' not in page  # a stopped test shows no run controls

    client.post(f"/tests/{started.pk}/archive/", {"archived": "on"})
    started.refresh_from_db()
    assert started.is_archived is True
    client.post(f"/tests/{started.pk}/archive/")
    started.refresh_from_db()
    assert started.is_archived is False


def test_benchmarks_page_starts_a_test(benchmark: Any, operator: Any, viewer: Any) -> None:
    page = logged_in(operator).get("/benchmarks/").content.decode()
    assert benchmark.name in page
    assert f'Start test<span class="visually-hidden"> of {benchmark.name}</span>' in page
    response = logged_in(operator).post(
        "/benchmarks/", {"benchmark_id": benchmark.pk, "infinite_mode": "on"}
    )
    test = Test.objects.get(benchmark=benchmark)
    assert response["Location"] == f"/tests/{test.pk}/"
    assert test.infinite_mode is True
    assert test.created_by == operator
    assert test.total_runs == 2

    viewer_page = logged_in(viewer).get("/benchmarks/").content.decode()
    assert benchmark.name in viewer_page
    assert "view only" in viewer_page
    logged_in(viewer).post("/benchmarks/", {"benchmark_id": benchmark.pk})
    assert Test.objects.filter(benchmark=benchmark).count() == 1


def test_benchmarks_page_hides_other_departments(benchmark: Any, outsider: Any) -> None:
    page = logged_in(outsider).get("/benchmarks/").content.decode()
    assert benchmark.name not in page
    response = logged_in(outsider).post("/benchmarks/", {"benchmark_id": benchmark.pk})
    assert response.status_code == 404
    assert not Test.objects.exists()


def test_benchmarks_page_searches_pages_and_counts_its_queries(
    research: Any, operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests_app.pages.views.BENCHMARKS_PAGE_SIZE", 2)
    for name in ("Apple", "Banana", "Cherry"):
        factories.make_benchmark(department=research, name=name, entries=3)
    factories.make_benchmark(department=research, name="Damson", eval__name="Apple eval")
    client = logged_in(operator)

    def names(page: str) -> list[str]:
        return re.findall(r'data-label="Benchmark">([^<]+)<br>', page)

    client.get("/benchmarks/")  # warm the session
    with CaptureQueriesContext(connection) as queries:
        first = client.get("/benchmarks/").content.decode()
    # The session, the user, the memberships, one page of benchmarks and their total, and the
    # targets they may be started against.
    assert len(queries) <= 6
    assert names(first) == ["Apple", "Banana"]
    assert "4 benchmarks you may see" in first
    assert 'data-label="Entries">3</td>' in first
    assert 'href="?q=&amp;offset=2" rel="next"' in first
    assert names(client.get("/benchmarks/", {"offset": 2}).content.decode()) == [
        "Cherry",
        "Damson",
    ]
    # A search matches the benchmark's name or its eval's name.
    found = client.get("/benchmarks/", {"q": "apple"}).content.decode()
    assert names(found) == ["Apple", "Damson"]
    assert "2 benchmarks you may see" in found


def test_dashboard_shows_pass_rate_per_eval(
    started: Test, operator: Any, outsider: Any, django_capture_on_commit_callbacks: Any
) -> None:
    replayed_invocation(started, operator, django_capture_on_commit_callbacks, score=0.9)
    replayed_invocation(started, operator, django_capture_on_commit_callbacks, score=0.2)
    refresh_analytics_views()
    page = logged_in(operator).get("/dashboard/").content.decode()
    row = re.search(r"<tr>\s*<td data-label=\"Eval\">.*?</tr>", page, re.S)
    assert row is not None
    assert started.eval.name in row.group(0)
    assert ">2</td>" in row.group(0)  # graded runs
    assert "50%" in row.group(0)  # one of two passed (threshold 0.7)
    assert "0.55" in row.group(0)  # mean of 0.9 and 0.2
    assert page.count("<circle") == 2  # one point per chart for the single day
    assert started.eval.name not in logged_in(outsider).get("/dashboard/").content.decode()


def test_word_diff_marks_changes_and_escapes() -> None:
    reference, output = word_diff("Paris is <b>nice</b>", "Paris is <i>big</i>")
    assert reference == "Paris is <del>&lt;b&gt;nice&lt;/b&gt;</del>"
    assert output == "Paris is <ins>&lt;i&gt;big&lt;/i&gt;</ins>"


def test_staff_refreshes_the_dashboard(
    started: Test, staff: Any, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    replayed_invocation(started, operator, django_capture_on_commit_callbacks, score=0.9)
    client = logged_in(staff)
    if connection.vendor == "postgresql":  # materialized: stale until refreshed
        assert "No graded runs in this window." in client.get("/dashboard/").content.decode()
    page = client.post("/dashboard/", follow=True).content.decode()
    assert "Refreshed analytics_eval_daily" in page
    assert "100%" in page
    operator_page = logged_in(operator).post("/dashboard/", follow=True).content.decode()
    assert "staff only" in operator_page


def test_detail_page_queries_do_not_grow_with_the_test(
    research: Any, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    def queries_for(entries: int) -> int:
        benchmark = factories.make_benchmark(department=research, entries=entries, turns=2)
        test = start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk)
        for _ in range(min(entries, 3)):
            replayed_invocation(test, operator, django_capture_on_commit_callbacks, score=0.5)
        client = logged_in(operator)
        client.get(detail_url(test))  # warm the session
        cache.clear()  # the shared detail read is cached; measure it uncached every time
        with CaptureQueriesContext(connection) as queries:
            assert client.get(detail_url(test)).status_code == 200
        return len(queries)

    many = queries_for(40)
    assert many == queries_for(4)  # both still running, so both measure their pace
    assert many <= 20


def test_regrade_of_an_invocation_of_another_test_is_refused(
    started: Test, benchmark: Any, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    invocation = replayed_invocation(
        started, operator, django_capture_on_commit_callbacks, score=0.9
    )
    other = start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk)
    response = logged_in(operator).post(
        f"/tests/{other.pk}/regrade/",
        {"invocation_id": invocation.pk, "score": "0.1", "passed": "false", "reason": "x"},
    )
    assert response.status_code == 404
    assert not Grade.objects.filter(source="human").exists()


def test_live_fragment_is_the_page_part_that_scripts_refresh(
    started: Test, operator: Any, viewer: Any, outsider: Any
) -> None:
    claim = claim_next_run(actor=Actor(user=operator), test_id=started.pk)
    fragment = logged_in(viewer).get(detail_url(started), {"fragment": "1"}).content.decode()
    assert "<html" not in fragment
    assert 'id="runs-table"' in fragment
    # Not pinned to an invocation: the fragment follows the newest one.
    assert f'data-invocation-id="{claim.invocation.pk}"' in fragment
    assert logged_in(outsider).get(detail_url(started), {"fragment": "1"}).status_code == 404


def test_search_by_date_and_name(started: Test, staff: Any) -> None:
    client = logged_in(staff)
    future = client.get("/tests/", {"start_date": "2999-01-01"}).content.decode()
    assert "No tests match" in future
    by_name = client.get("/tests/", {"eval_search": started.eval.name[:4].lower()})
    assert started.benchmark.name in by_name.content.decode()
    assert "No tests match" in client.get("/tests/", {"eval_search": "zzz"}).content.decode()


def test_charts_escape_their_labels() -> None:
    day = datetime.date(2026, 1, 2)
    svg = charts.line_chart({"<script>x</script>": [charts.Point(day, 0.5)]}, title="A & B")
    assert "<script>" not in svg
    assert "&lt;script&gt;x&lt;/script&gt; 2026-01-02: 0.50" in svg
    assert 'aria-label="A &amp; B"' in svg
    bar = charts.status_bar({"pending": 1, "completed": 3})
    assert 'width="480.0"' in bar  # three quarters of 640 for completed


@pytest.mark.parametrize(
    "query",
    [
        "/benchmarks/?offset=999999999999999999999999999999",
        "/benchmarks/?offset=-5",
        "/tests/?offset=999999999999999999999999999999",
        "/tests/?offset=9223372036854775808&page_size=100",
        "/dashboard/?days=999999999999999999999999",
    ],
)
def test_huge_offsets_show_a_page_not_a_crash(query: str, benchmark: Any, operator: Any) -> None:
    response = logged_in(operator).get(query)
    assert response.status_code == 200
    assert b"<main" in response.content


def test_huge_runs_offset_shows_an_empty_page_of_runs(started: Test, operator: Any) -> None:
    response = logged_in(operator).get(f"{detail_url(started)}?runs_offset=9999999999999")
    assert response.status_code == 200
    assert response.context["runs"] == []
    assert response.context["runs_offset"] == 1_000_000_000
    # The link back to the newest runs is still there.
    assert response.context["runs_previous"] is not None


def test_a_control_pressed_after_the_session_expired_ends_on_the_test_page(
    started: Test, operator: Any
) -> None:
    client = Client()
    response = client.post(f"/tests/{started.pk}/next/")
    login_url = response["Location"]
    assert login_url.startswith("/accounts/login/?next=")
    response = client.post(
        login_url, {"username": operator.username, "password": "correct-horse-battery"}, follow=True
    )
    assert response.redirect_chain[-1] == (detail_url(started), 302)
    assert response.status_code == 200
    assert "Nothing was changed: press the button again" in response.content.decode()
    assert not TestInvocation.objects.filter(test=started).exists()


def test_end_is_named_after_what_will_grade(
    started: Test, operator: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    replayed_invocation(started, operator, django_capture_on_commit_callbacks)
    settings.JUDGE_MODEL = ""
    page = logged_in(operator).get(detail_url(started)).content.decode()
    assert ">End with reference grade</button>" in page
    assert "AI grade" not in page
    settings.JUDGE_MODEL = "some-judge"
    page = logged_in(operator).get(detail_url(started)).content.decode()
    assert ">End with AI grade</button>" in page


def test_list_per_page_says_what_it_shows_and_orders(
    benchmark: Any, operator: Any, support: Any
) -> None:
    actor = Actor(user=operator)
    tests = [start_test(actor=actor, benchmark_id=benchmark.pk) for _ in range(12)]
    other = factories.make_benchmark(department=benchmark.eval.department, name="Aardvark bench")
    first = start_test(actor=actor, benchmark_id=other.pk)
    client = logged_in(operator)

    page = client.get("/tests/").content.decode()
    assert re.search(r'<option value="20" selected>20</option>', page)
    assert page.count("<tr data-test-id=") == 13
    # Rows of one benchmark differ by their test id, target, starter and time.
    assert f"test {str(tests[0].pk)[:8]}" in page
    assert "by Olive Operator" in page

    page = client.get("/tests/", {"page_size": "10"}).content.decode()
    assert page.count("<tr data-test-id=") == 10
    assert re.search(r'<option value="10" selected>10</option>', page)

    rows = re.findall(r'<tr data-test-id="([^"]+)"', client.get("/tests/").content.decode())
    assert rows[0] == str(first.pk)  # newest first
    rows = re.findall(
        r'<tr data-test-id="([^"]+)"', client.get("/tests/", {"order": "oldest"}).content.decode()
    )
    assert rows[0] == str(tests[0].pk)
    page = client.get("/tests/", {"order": "benchmark"}).content.decode()
    assert re.findall(r'<tr data-test-id="([^"]+)"', page)[0] == str(first.pk)
    assert re.search(r'<option value="benchmark" selected>', page)
    assert "not valid" in client.get("/tests/", {"order": "sideways"}, follow=True).content.decode()


def test_the_empty_list_blames_only_filters_that_are_set(operator: Any) -> None:
    client = logged_in(operator)
    page = client.get("/tests/").content.decode()
    assert "No active tests" in page
    assert "start one from a benchmark" in page
    assert "these filters" not in page
    page = client.get("/tests/", {"eval_search": "nothing"}).content.decode()
    assert "No tests match these filters" in page
    page = client.get("/tests/", {"archived": "all", "page_size": "50"}).content.decode()
    assert "these filters" not in page


def test_stop_asks_first_on_a_page_of_its_own_without_javascript(
    started: Test, operator: Any
) -> None:
    client = logged_in(operator)
    claimed = client.post(f"/tests/{started.pk}/next/")
    page = client.get(claimed["Location"]).content.decode()
    # The Stop control is a GET form to the confirmation page, and opens the dialog with JS.
    assert re.search(
        rf'<form method="get" action="/tests/{started.pk}/stop/" data-confirm-with="stop-dialog">',
        page,
    )
    assert '<dialog id="stop-dialog"' in page
    confirm = client.get(f"/tests/{started.pk}/stop/")
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert "Stop this test of" in text
    assert "A stopped test cannot be resumed" in text
    started.refresh_from_db()
    assert started.status == Test.Status.RUNNING  # asking changed nothing

    response = client.post(f"/tests/{started.pk}/stop/", follow=True)
    started.refresh_from_db()
    assert started.status == Test.Status.STOPPED
    assert TestInvocation.objects.get(test=started).status == TestInvocation.Status.STOPPED
    text = response.content.decode()
    assert "The test is stopped: replays in progress halt" in text
    assert "409" not in messages_of(text)
    assert "already stopped: there is nothing to stop" in (
        client.get(f"/tests/{started.pk}/stop/").content.decode()
    )


def test_a_claimed_run_left_behind_is_shown_with_what_can_be_done(
    started: Test, operator: Any
) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/next/")
    left_behind = TestInvocation.objects.get(test=started)
    client.post(f"/tests/{started.pk}/next/")
    page = client.get(detail_url(started)).content.decode()
    item = re.search(
        rf'<li data-invocation-id="{left_behind.pk}" data-status="created">(.*?)</li>',
        page,
        re.DOTALL,
    )
    assert item, page
    assert "claimed by Olive Operator (browser) but not replayed yet" in item.group(1)
    assert "Run it</button>" in item.group(1)
    assert "Stop test stops all of them." in page


def test_messages_are_in_a_staff_members_words(
    started: Test, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/next/")
    invocation = TestInvocation.objects.get(test=started)
    # Ending a run that was not replayed yet.
    response = client.post(
        f"/tests/{started.pk}/end/",
        {"invocation_id": invocation.pk, "run_id": invocation.run_id},
        follow=True,
    )
    assert "This run has not been replayed yet: run it first." in response.content.decode()
    client.post(f"/tests/{started.pk}/next/")
    # Every run is claimed: nothing to claim, but the test is not finished.
    text = client.post(f"/tests/{started.pk}/next/", follow=True).content.decode()
    assert "No run is waiting to be claimed" in text
    assert "409" not in messages_of(text)
    assert "call next" not in text
    client.post(f"/tests/{started.pk}/stop/")
    text = client.post(f"/tests/{started.pk}/next/", follow=True).content.decode()
    assert "This test is stopped, so nothing more runs in it." in text
