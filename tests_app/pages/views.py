"""The staff pages: server-rendered, sharing the API's selectors and services.

Controls are plain forms POSTed (with CSRF) to one view that looks their name up in ``CONTROLS``;
each calls one service and redirects back (post/redirect/get), so every page works without
JavaScript. Domain errors become a message on the page rather than an error body, in the page's
own words (``pages/words.py``); a test the user may not see is a 404, as in the API.

Run all and Retry failed call the same services as the API's run_all and retry; the page follows
a run-all through the test's websocket (the live part refreshes on its events), with its progress,
pace and time left (``pages/progress.py``). Stop asks first: a dialog with JavaScript, else a
confirmation page at the control's own address (GET); it stops the test's newest open invocation,
which stops the whole test and any run-all driving it. A control's address reached by GET (after
logging back in) changes nothing and goes back to the test.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from tests_app import judges
from tests_app.actors import Actor
from tests_app.errors import DomainError, InvalidTransition, NotFound, ValidationFailed
from tests_app.models import RunAll, Test
from tests_app.pages import charts, progress, reads, words
from tests_app.pages import compare as compare_words
from tests_app.pages.forms import (
    PAGE_SIZE_DEFAULT,
    ArchiveForm,
    InvocationForm,
    RegradeForm,
    RunAllForm,
    SearchForm,
    StartForm,
    StopForm,
    grader_words,
)
from tests_app.paging import MAX_PAGE_OFFSET
from tests_app.selectors import agreement, analytics
from tests_app.selectors.benchmarks import search_benchmarks, targets_by_department
from tests_app.selectors.compare import (
    compare_page,
    comparison_rows,
    entry_side_by_side,
    oldest_first,
    other_tests,
)
from tests_app.selectors.scope import (
    can_operate_department,
    get_visible_test,
    operable_department_ids,
)
from tests_app.selectors.search import SearchRow
from tests_app.services.archiving import set_archived
from tests_app.services.claiming import claim_next_run
from tests_app.services.ending import end_invocation
from tests_app.services.exporting import export_test
from tests_app.services.regrading import regrade_invocation
from tests_app.services.retrying import retry_runs
from tests_app.services.run_all import start_run_all
from tests_app.services.running import request_replay
from tests_app.services.stopping import stop_invocation, stop_test

RUNS_PAGE_SIZE = 25
# "End" is named after what will grade: an AI only when a judge is configured (docs/judges.md).
END_LABELS = {"ai": "End with AI grade", "reference": "End with reference grade"}
BENCHMARKS_PAGE_SIZE = 50


def _actor(request: HttpRequest) -> Actor:
    return Actor(user=request.user)  # type: ignore[arg-type]  # views are login_required


def _visible_test_or_404(request: HttpRequest, test_id: uuid.UUID) -> Test:
    try:
        return get_visible_test(
            user=request.user,
            test_id=test_id,
            queryset=Test.objects.select_related(
                "benchmark", "eval__rubric", "department", "target"
            ),
        )
    except NotFound as error:
        raise Http404(error.detail) from error


def _int_param(request: HttpRequest, name: str, default: int = 0) -> int:
    """A count from the query string: malformed is the default, huge is the last (empty) page."""
    try:
        return min(max(0, int(request.GET.get(name, default))), MAX_PAGE_OFFSET)
    except (TypeError, ValueError):
        return default


# --- /tests/ ----------------------------------------------------------------------------------


@login_required
@require_GET
def test_list(request: HttpRequest) -> HttpResponse:
    from tests_app.selectors.search import search_tests

    params = request.GET.copy()
    if params:
        # Absent choices mean the defaults, as on the unfiltered page.
        params.setdefault("page_size", str(PAGE_SIZE_DEFAULT))
        params.setdefault("archived", "active")
        params.setdefault("order", "newest")
    form = SearchForm(params or None)
    result: Any = None
    if form.is_bound and not form.is_valid():
        messages.error(request, "Some filters are not valid; they were ignored.")
    data = form.cleaned_data if form.is_bound and form.is_valid() else {}
    page_size = data.get("page_size") or PAGE_SIZE_DEFAULT
    offset = data.get("offset") or 0
    try:
        result = search_tests(
            actor=_actor(request),
            eval_ids=data.get("eval") or None,
            department_ids=data.get("department") or None,
            target_ids=data.get("target") or None,
            eval_search=data.get("eval_search") or None,
            department_search=data.get("department_search") or None,
            start_date=data.get("start_date"),
            end_date=data.get("end_date"),
            is_archived=form.is_archived() if data else False,
            page_size=page_size,
            page_offset=offset,
            order=data.get("order") or "newest",
        )
    except DomainError as error:
        messages.error(request, error.detail)
    result = (
        {
            "tests": result.tests,
            "eval_filter": _as_dict(result.eval_filter),
            "department_filter": _as_dict(result.department_filter),
            "target_filter": _as_dict(result.target_filter),
            "total_count": result.total_count,
        }
        if result is not None
        else {}
    )
    total = result.get("total_count") or 0
    query = request.GET.copy()
    query.pop("offset", None)
    base_query = query.urlencode()
    return render(
        request,
        "tests_app/test_list.html",
        {
            "form": form,
            "tests": [_search_item(test) for test in result.get("tests") or []],
            "facets": [
                _facet_with_links(request, _as_dict(section), param)
                for section, param in (
                    (result.get("eval_filter"), "eval"),
                    (result.get("department_filter"), "department"),
                    (result.get("target_filter"), "target"),
                )
                if section
            ],
            "total_count": total,
            "offset": offset,
            "page_size": page_size,
            "shown_to": min(offset + page_size, total),
            "previous_url": f"?{base_query}&offset={max(0, offset - page_size)}"
            if offset
            else None,
            "next_url": f"?{base_query}&offset={offset + page_size}"
            if offset + page_size < total
            else None,
            "selected_archived": data.get("archived") or "active",
            "filtered": form.narrows(),
            "can_start": operable_department_ids(request.user) != [],
        },
    )


def _as_dict(value: Any) -> dict[str, Any]:
    """Selectors may return a dict or a dataclass; the templates read dict keys either way."""
    if isinstance(value, dict):
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return dict(value)


def _search_item(row: SearchRow) -> dict[str, Any]:
    """One row of the list, from a row of the search's page."""
    item = asdict(row)
    item.pop("benchmark_id")
    item.pop("eval_id")
    item.pop("department_id")
    item.pop("target_id")
    return item


def _facet_with_links(request: HttpRequest, section: dict[str, Any], param: str) -> dict[str, Any]:
    options = []
    for option in section.get("options") or []:
        option = _as_dict(option)
        selected = bool(option.get("selected"))
        options.append(
            {**option, "url": _facet_url(request, param, str(option.get("id")), selected)}
        )
    return {**section, "param": param, "options": options}


def _facet_url(request: HttpRequest, key: str, option_id: str, selected: bool) -> str:
    """The link that toggles one facet option, keeping the other filters and going to page 1."""
    query = request.GET.copy()
    query.pop("offset", None)
    values = [value for value in query.getlist(key) if value != option_id]
    if not selected:
        values.append(option_id)
    query.setlist(key, values)
    return f"?{query.urlencode()}"


# --- /tests/<id>/ -----------------------------------------------------------------------------


@login_required
@require_GET
def test_detail(request: HttpRequest, test_id: uuid.UUID) -> HttpResponse:
    from tests_app.selectors.test_detail import get_test_detail

    test = _visible_test_or_404(request, test_id)
    runs_offset = _int_param(request, "runs_offset")
    detail = _as_dict(
        get_test_detail(
            user=request.user,
            test_id=test.pk,
            runs_page_size=RUNS_PAGE_SIZE,
            runs_page_offset=runs_offset,
        )
    )
    invocation = None
    if request.GET.get("invocation"):
        invocation = reads.invocation_of_test(
            test_id=test.pk, invocation_id=request.GET["invocation"]
        )
    # A page without ?invocation= follows the newest invocation as it changes (live refreshes).
    pinned_invocation = invocation
    if invocation is None:
        invocation = reads.newest_invocation(test_id=test.pk)
    can_operate = can_operate_department(request.user, test.department_id)
    # The page's other open invocations, each with what can be done with it.
    open_invocations, more_open = reads.open_invocations(test_id=test.pk)
    open_invocations = [
        item for item in open_invocations if item.pk != getattr(invocation, "pk", None)
    ]
    summary = detail.get("status_summary") or {}
    run_all = reads.newest_run_all(test_id=test.pk)
    run_all_active = run_all is not None and run_all.status == RunAll.Status.ACTIVE
    # The pace of a run-all is its own; without one, the test's since its first claim.
    since = None
    if test.status == Test.Status.RUNNING:
        since = run_all.created_at if run_all_active and run_all else test.started_at
    run_progress = progress.measure(
        by_status=summary.get("by_status") or {},
        since=since,
        finished_since=progress.finished_since(test_id=test.pk, since=since) if since else 0,
        now=timezone.now(),
    )
    query = request.GET.copy()
    query.pop("runs_offset", None)
    total_runs = summary.get("total_runs") or 0
    context = {
        "test": test,
        "target": (detail.get("test") or {}).get("target") or {},
        "compare_with": _compare_with(request, test),
        "detail": detail,
        "summary": summary,
        "progress": run_progress,
        "status_chart": charts.status_bar(summary.get("by_status") or {}),
        "status_legend": charts.status_legend(summary.get("by_status") or {}),
        "runs": detail.get("runs") or [],
        "runs_offset": runs_offset,
        "runs_previous": max(0, runs_offset - RUNS_PAGE_SIZE) if runs_offset else None,
        "runs_next": runs_offset + RUNS_PAGE_SIZE
        if runs_offset + RUNS_PAGE_SIZE < total_runs
        else None,
        "invocations": detail.get("invocations") or [],
        "exports": (detail.get("resources") or {}).get("exports") or [],
        "invocation": invocation,
        "pinned_invocation": pinned_invocation,
        "open_invocations": open_invocations,
        "more_open_invocations": more_open,
        "transcript": reads.transcript(invocation=invocation) if invocation else [],
        "grades": reads.grades(invocation=invocation) if invocation else [],
        "show_controls": bool(detail.get("show_controls")),
        "run_all": run_all,
        "run_all_active": run_all_active,
        "run_all_finish": words.finish_reason(run_all.finish_reason) if run_all else "",
        "run_all_form": RunAllForm(),
        "grader_words": grader_words(),
        "can_retry": can_operate
        and not test.is_archived
        and test.status != Test.Status.STOPPED
        and bool((summary.get("by_status") or {}).get("failed")),
        "end_label": END_LABELS[judges.default_source()],
        "can_regrade": can_operate and not test.is_archived,
        "can_archive": can_operate,
        "regrade_note": words.regrade_note(invocation.status) if invocation else "",
        "regrade_form": RegradeForm(initial={"invocation_id": invocation.pk} if invocation else {}),
        "websocket_path": f"/ws/tests/{test.pk}/",
        "last_seq": test.event_seq,
    }
    template = (
        "tests_app/_test_live.html" if request.GET.get("fragment") else "tests_app/test_detail.html"
    )
    return render(request, template, context)


COMPARE_WITH_LIMIT = 20


def _compare_with(request: HttpRequest, test: Test) -> list[dict[str, Any]]:
    """The newest other tests of the same benchmark that the user may see, each with the link
    that compares it with this one (the older of the two is the baseline)."""
    if request.GET.get("fragment"):
        return []  # the live part of the page does not show them
    return [
        {
            **other,
            "url": f"{reverse('pages:compare')}?"
            + urlencode([("ids", str(test.pk)), ("ids", str(other["id"])), ("oldest_first", "1")]),
        }
        for other in other_tests(user=request.user, test=test, limit=COMPARE_WITH_LIMIT)
    ]


def _back_to_test(test_id: uuid.UUID, invocation_id: Any = None) -> HttpResponseRedirect:
    url = reverse("pages:test-detail", args=[test_id])
    if invocation_id:
        url += "?" + urlencode({"invocation": str(invocation_id)})
    return redirect(url)


def _invocation_form(request: HttpRequest) -> InvocationForm:
    form = InvocationForm(request.POST)
    if not form.is_valid():
        raise Http404("No such invocation.")
    return form


def _claim_next(request: HttpRequest, test: Test) -> tuple[str, Any]:
    claim = claim_next_run(actor=_actor(request), test_id=test.pk)
    return (
        f"Claimed run {claim.run.ordinal} of {claim.total_runs}: press Run to replay it.",
        claim.invocation.pk,
    )


def _run_replay(request: HttpRequest, test: Test) -> tuple[str, Any]:
    form = _invocation_form(request)
    invocation_id = form.cleaned_data["invocation_id"]
    request_replay(
        actor=_actor(request),
        test_id=test.pk,
        invocation_id=invocation_id,
        run_id=form.cleaned_data["run_id"],
    )
    return "The replay started; its turns appear below as they happen.", invocation_id


def _end_with_grade(request: HttpRequest, test: Test) -> tuple[str, Any]:
    form = _invocation_form(request)
    invocation_id = form.cleaned_data["invocation_id"]
    end_invocation(
        actor=_actor(request),
        test_id=test.pk,
        invocation_id=invocation_id,
        run_id=form.cleaned_data["run_id"],
        grade=True,
    )
    return "The invocation ended; its grade appears when the grader finishes.", invocation_id


def _stop(request: HttpRequest, test: Test) -> tuple[str, Any]:
    form = StopForm(request.POST)
    invocation_id = form.cleaned_data["invocation_id"] if form.is_valid() else None
    if invocation_id is None:
        # Stopping any open invocation stops the whole test: the page's Stop names none.
        newest = reads.newest_open_invocation(test_id=test.pk)
        invocation_id = newest.pk if newest is not None else None
    if invocation_id is None:
        # Nothing open (a run-all between two claims, runs waiting for an agent): the test
        # itself stops.
        if not stop_test(actor=_actor(request), test_id=test.pk):
            raise InvalidTransition(f"The test is already {test.status}: there is nothing to stop.")
    else:
        outcome = stop_invocation(actor=_actor(request), invocation_id=invocation_id)
        if not outcome.success:
            # The API answers success=false; on a page it is an error message like the others.
            raise InvalidTransition(outcome.message or "Nothing to stop.")
    return (
        "The test is stopped: replays in progress halt before their next turn, and no more runs "
        "are claimed.",
        invocation_id,
    )


def _form_problems(form: Any) -> str:
    return "; ".join(
        f"{form.fields[name].label or name}: {' '.join(str(e) for e in errors)}"
        if name in form.fields
        else " ".join(str(e) for e in errors)
        for name, errors in form.errors.items()
    )


def _run_all(request: HttpRequest, test: Test) -> tuple[str, Any]:
    form = RunAllForm(request.POST)
    if not form.is_valid():
        raise ValidationFailed(f"Run all did not start. {_form_problems(form)}")
    run_all = start_run_all(
        actor=_actor(request),
        test_id=test.pk,
        concurrency=form.cleaned_data["concurrency"],
        grade=form.cleaned_data["grade"],
        max_runs=form.cleaned_data["max_runs"],
    )
    grading = (
        f"each graded by {grader_words()}"
        if run_all.grade == RunAll.Grading.AI
        else "ended without a grade"
    )
    return (
        f"Run all started: up to {run_all.concurrency} run{'s' if run_all.concurrency > 1 else ''} "
        f"at once, {grading}. Progress shows "
        "below as it happens; it carries on if you leave this page.",
        None,
    )


def _retry(request: HttpRequest, test: Test) -> tuple[str, Any]:
    requeued = retry_runs(actor=_actor(request), test_id=test.pk, statuses=["failed"])
    if not requeued:
        return "No failed run to retry.", None
    runs = f"{requeued} failed run{'s are' if requeued > 1 else ' is'}"
    return (
        f"{runs} back in the queue, their earlier attempts kept below. Run all, or Next run, "
        "replays them.",
        None,
    )


def _archive(request: HttpRequest, test: Test) -> tuple[str, Any]:
    form = ArchiveForm(request.POST)
    archived = form.is_valid() and bool(form.cleaned_data["archived"])
    set_archived(actor=_actor(request), test_ids=[test.pk], archived=archived)
    return ("The test is archived." if archived else "The test is unarchived."), None


def _export(request: HttpRequest, test: Test) -> tuple[str, Any]:
    export = export_test(actor=_actor(request), test_id=test.pk)
    return (
        f"Exported {export.file_name} ({export.row_count} rows): download it from Exports below.",
        None,
    )


def _regrade(request: HttpRequest, test: Test) -> tuple[str, Any]:
    form = RegradeForm(request.POST)
    if not form.is_valid():
        raise ValidationFailed(f"The regrade was not saved. {_form_problems(form)}")
    # The form names an invocation; it must belong to the test of this URL.
    if (
        reads.invocation_of_test(test_id=test.pk, invocation_id=form.cleaned_data["invocation_id"])
        is None
    ):
        raise NotFound("No such invocation in this test.")
    grade = regrade_invocation(
        actor=_actor(request),
        invocation_id=form.cleaned_data["invocation_id"],
        score=form.cleaned_data["score"],
        passed=form.cleaned_data["passed"],
        feedback=form.cleaned_data["feedback"],
        reason=form.cleaned_data["reason"],
    )
    return "Your grade is stored; the earlier grade is kept in the history.", grade.invocation_id


# Controls that ask before acting: with JavaScript a dialog on the test page, without it this page.
CONFIRMATIONS = {"stop": "tests_app/test_stop_confirm.html"}

# Each control calls one service and names the message to show and the invocation to follow.
CONTROLS: dict[str, Callable[[HttpRequest, Test], tuple[str, Any]]] = {
    "next": _claim_next,
    "run": _run_replay,
    "end": _end_with_grade,
    "stop": _stop,
    "run-all": _run_all,
    "retry": _retry,
    "archive": _archive,
    "export": _export,
    "regrade": _regrade,
}


@login_required
def test_control(request: HttpRequest, test_id: uuid.UUID, action: str) -> HttpResponse:
    """Run one control on a visible test; show its outcome or its domain error as a message."""
    control = CONTROLS.get(action)
    # An unknown name is no page at all, whatever the method; the controls act only on POST.
    if control is None:
        raise Http404("No such control.")
    test = _visible_test_or_404(request, test_id)
    if request.method != "POST" and action in CONFIRMATIONS:
        # Without JavaScript, a control that asks first is a link to its confirmation page.
        return render(request, CONFIRMATIONS[action], {"test": test})
    if request.method != "POST":
        # A control's address is reached by GET after logging back in (the login page's "next"
        # after a session expired mid-click): go back to the test, having changed nothing.
        messages.info(request, "Nothing was changed: press the button again if you still want to.")
        return _back_to_test(test.pk)
    try:
        message, invocation_id = control(request, test)
    except NotFound as error:
        raise Http404(error.detail) from error
    except DomainError as error:
        messages.error(request, words.for_staff(control=action, error=error, test=test))
        return _back_to_test(test.pk, request.POST.get("invocation_id"))
    messages.success(request, message)
    return _back_to_test(test.pk, invocation_id)


# --- /tests/compare/ -------------------------------------------------------------------------

COMPARE_PAGE_SIZE = 50


def _compare_ids(request: HttpRequest) -> list[uuid.UUID] | None:
    try:
        return [uuid.UUID(value) for value in request.GET.getlist("ids")]
    except ValueError:
        return None


def _compare_query(request: HttpRequest, **changes: Any) -> str:
    """The current compare URL's query with some parameters changed (None removes one)."""
    query = request.GET.copy()
    for name, value in changes.items():
        query.pop(name, None)
        if value is not None:
            query[name] = str(value)
    return f"?{query.urlencode()}"


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    """2 to 5 tests side by side: their figures, each candidate's deltas in words, the entries
    by change or by delta, and one entry's transcripts turn by turn (``?entry=<position>``)."""
    test_ids = _compare_ids(request)
    if test_ids and request.GET.get("oldest_first"):
        # From the tests list, newest first: the oldest ticked test becomes the baseline, and
        # the address says so from then on.
        ordered = oldest_first(user=request.user, test_ids=test_ids)
        return redirect(compare_words.compare_url(ordered))
    only = request.GET.get("only") or None
    order = request.GET.get("order") or "position"
    offset = _int_param(request, "offset")
    try:
        if test_ids is None:
            raise ValidationFailed("A test id in the address is not valid.")
        page = compare_page(
            user=request.user,
            test_ids=test_ids,
            only=only,
            order=order,
            page_size=COMPARE_PAGE_SIZE,
            page_offset=offset,
        )
        entry = None
        if request.GET.get("entry"):
            entry = entry_side_by_side(
                user=request.user, test_ids=test_ids, position=_int_param(request, "entry")
            )
    except NotFound as error:
        raise Http404(error.detail) from error
    except DomainError as error:
        messages.error(request, f"{error.detail} Choose 2 to 5 tests of one benchmark below.")
        return redirect("pages:tests")
    context = compare_words.page_context(
        page=page,
        entry=entry,
        test_ids=test_ids,
        link=lambda **changes: _compare_query(request, **changes),
        page_size=COMPARE_PAGE_SIZE,
        offset=offset,
    )
    return render(request, "tests_app/compare.html", {**context, "only": only, "order": order})


@login_required
@require_GET
def compare_csv(request: HttpRequest) -> HttpResponse:
    """Every entry of a comparison as CSV. Built in memory: a row is about a hundred bytes, so a
    10,000-entry comparison is a megabyte."""
    test_ids = _compare_ids(request)
    if test_ids is None:
        raise Http404("A test id in the address is not valid.")
    try:
        rows = comparison_rows(user=request.user, test_ids=test_ids)
    except NotFound as error:
        raise Http404(error.detail) from error
    except DomainError as error:
        messages.error(request, error.detail)
        return redirect("pages:tests")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="comparison.csv"'
    writer = csv.writer(response)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return response


# --- /benchmarks/ -----------------------------------------------------------------------------


@login_required
def benchmark_list(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _start_test(request)
    offset = _int_param(request, "offset")
    search = (request.GET.get("q") or "").strip()[:200]
    page = search_benchmarks(
        user=request.user,
        search=search,
        page_size=BENCHMARKS_PAGE_SIZE,
        page_offset=offset,
    )
    total = page.total_count
    targets = targets_by_department(
        user=request.user,
        department_ids={benchmark.eval.department_id for benchmark in page.benchmarks},
    )
    rows = [
        {
            "benchmark": benchmark,
            "can_start": can_operate_department(request.user, benchmark.eval.department_id),
            "form": StartForm(initial={"benchmark_id": benchmark.pk}),
            "targets": targets.get(benchmark.eval.department_id, []),
        }
        for benchmark in page.benchmarks
    ]
    return render(
        request,
        "tests_app/benchmark_list.html",
        {
            "rows": rows,
            "total_count": total,
            "search": search,
            "offset": offset,
            "previous_offset": max(0, offset - BENCHMARKS_PAGE_SIZE) if offset else None,
            "next_offset": offset + BENCHMARKS_PAGE_SIZE
            if offset + BENCHMARKS_PAGE_SIZE < total
            else None,
        },
    )


def _start_test(request: HttpRequest) -> HttpResponse:
    from tests_app.services.starting import start_test

    form = StartForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a benchmark to start.")
        return redirect("pages:benchmarks")
    try:
        test = start_test(
            actor=_actor(request),
            benchmark_id=form.cleaned_data["benchmark_id"],
            infinite_mode=form.cleaned_data["infinite_mode"],
            target_id=form.cleaned_data["target_id"],
        )
    except NotFound as error:
        raise Http404(error.detail) from error
    except DomainError as error:
        messages.error(request, error.detail)
        return redirect("pages:benchmarks")
    messages.success(request, "The test is started: press Next to claim its first run.")
    return redirect("pages:test-detail", test_id=test.pk)


# --- /dashboard/ ------------------------------------------------------------------------------


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        from tests_app.services.refresh import refresh

        try:
            result = refresh(actor=_actor(request))
        except DomainError as error:
            messages.error(request, error.detail)
        else:
            messages.success(
                request, f"Refreshed {', '.join(result.refreshed_views) or 'nothing'}."
            )
        return redirect("pages:dashboard")
    days = min(_int_param(request, "days", 30) or 30, analytics.MAX_DAYS)
    trends = analytics.eval_trends(user=request.user, days=days)
    pass_series = {
        trend.eval_name: [
            charts.Point(day.day, day.pass_rate) for day in trend.days if day.pass_rate is not None
        ]
        for trend in trends
    }
    score_series = {
        trend.eval_name: [
            charts.Point(day.day, day.mean_score)
            for day in trend.days
            if day.mean_score is not None
        ]
        for trend in trends
    }
    return render(
        request,
        "tests_app/dashboard.html",
        {
            "days": days,
            "trends": trends,
            "legend": charts.legend_colours([trend.eval_name for trend in trends]),
            "pass_chart": charts.line_chart(pass_series, title="Pass rate per eval per day"),
            "score_chart": charts.line_chart(score_series, title="Mean score per eval per day"),
            "materialized": analytics.is_materialized(),
        },
    )


# --- /judges/agreement/ -----------------------------------------------------------------------


@login_required
@require_GET
def judge_agreement(request: HttpRequest) -> HttpResponse:
    """How the LLM judge agrees with human regrades, beside the newest disagreements (of the
    rubric in ?rubric=, else of every rubric the user may see)."""
    rubric_id = None
    if request.GET.get("rubric"):
        try:
            rubric_id = uuid.UUID(request.GET["rubric"])
        except ValueError as error:
            raise Http404("No such rubric.") from error
    try:
        report = agreement.judge_agreement(user=request.user, rubric_id=rubric_id)
    except NotFound as error:
        raise Http404(error.detail) from error
    return render(
        request,
        "tests_app/judge_agreement.html",
        {
            "items": report.items,
            "disagreements": report.disagreements,
            "rubric_id": rubric_id,
            "rubric_name": report.items[0].rubric_name if rubric_id and report.items else "",
            "min_pairs": agreement.MIN_PAIRS,
            "score_gap": agreement.DISAGREEMENT_SCORE_GAP,
        },
    )


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect("pages:tests")
