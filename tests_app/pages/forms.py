"""Forms of the staff pages: they parse GET filters and POSTed controls, never change data."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms

from tests_app import judges
from tests_app.models import RunAll
from tests_app.paging import MAX_PAGE_OFFSET
from tests_app.services.run_all import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, MIN_CONCURRENCY

ARCHIVED_CHOICES = [("active", "Active"), ("archived", "Archived"), ("all", "All")]
PAGE_SIZE_CHOICES = [(10, "10"), (20, "20"), (50, "50"), (100, "100")]
PAGE_SIZE_DEFAULT = 20
ORDER_CHOICES = [
    ("newest", "Newest first"),
    ("oldest", "Oldest first"),
    ("benchmark", "Benchmark (A to Z)"),
    ("target", "Target (A to Z)"),
    ("status", "Status"),
]
# The filters that narrow the list (the others only choose how it is shown).
NARROWING_FILTERS = (
    "eval",
    "department",
    "target",
    "eval_search",
    "department_search",
    "start_date",
    "end_date",
)


class SearchForm(forms.Form):
    """The filters of /tests/, as GET parameters (so a filtered list is a link to share)."""

    eval = forms.MultipleChoiceField(required=False, label="Evals")
    department = forms.MultipleChoiceField(required=False, label="Departments")
    target = forms.MultipleChoiceField(required=False, label="Targets")
    eval_search = forms.CharField(required=False, max_length=200, label="Eval name contains")
    department_search = forms.CharField(
        required=False, max_length=200, label="Department name contains"
    )
    start_date = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    end_date = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    archived = forms.ChoiceField(
        required=False, choices=ARCHIVED_CHOICES, initial="active", label="Show"
    )
    # The initial value is what an unfiltered list shows, so the menu says what the page does.
    page_size = forms.TypedChoiceField(
        required=False,
        choices=PAGE_SIZE_CHOICES,
        coerce=int,
        empty_value=None,
        initial=PAGE_SIZE_DEFAULT,
        label="Per page",
    )
    order = forms.ChoiceField(
        required=False, choices=ORDER_CHOICES, initial="newest", label="Order"
    )
    offset = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_PAGE_OFFSET, widget=forms.HiddenInput
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Facet ids are checked as UUIDs by the search; any value is accepted here, the options
        # come from the facet counts rather than a second query.
        self.fields["eval"].valid_value = lambda value: True  # type: ignore[attr-defined]
        self.fields["department"].valid_value = lambda value: True  # type: ignore[attr-defined]
        self.fields["target"].valid_value = lambda value: True  # type: ignore[attr-defined]

    def _uuids(self, name: str) -> list[uuid.UUID]:
        try:
            return [uuid.UUID(value) for value in self.cleaned_data.get(name) or []]
        except ValueError as error:
            raise forms.ValidationError("Not a valid id.") from error

    def clean_eval(self) -> list[uuid.UUID]:
        return self._uuids("eval")

    def clean_department(self) -> list[uuid.UUID]:
        return self._uuids("department")

    def clean_target(self) -> list[uuid.UUID]:
        return self._uuids("target")

    def narrows(self) -> bool:
        """Whether a filter that hides tests is set (the archived choice is shown apart)."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        return any(data.get(name) for name in NARROWING_FILTERS)

    def is_archived(self) -> bool | None:
        return {"active": False, "archived": True}.get(
            self.cleaned_data.get("archived") or "active"
        )


class StartForm(forms.Form):
    benchmark_id = forms.UUIDField(widget=forms.HiddenInput)
    infinite_mode = forms.BooleanField(required=False, label="Infinite mode")
    # Empty: the benchmark's default target; the start service checks what is chosen.
    target_id = forms.UUIDField(required=False)


class InvocationForm(forms.Form):
    """run / end / stop act on one invocation of one run."""

    invocation_id = forms.UUIDField(widget=forms.HiddenInput)
    run_id = forms.UUIDField(required=False, widget=forms.HiddenInput)


def grader_words() -> str:
    """Who grades when a run is ended with a grade, as the pages name it (docs/judges.md)."""
    if judges.default_source() == "ai":
        return "the AI judge"
    return "the reference comparison (no AI judge is configured)"


class RunAllForm(forms.Form):
    """Run all: how many runs the workers replay at once, and whether they grade each."""

    concurrency = forms.IntegerField(
        min_value=MIN_CONCURRENCY,
        max_value=MAX_CONCURRENCY,
        initial=DEFAULT_CONCURRENCY,
        label="Runs at once",
    )
    grade = forms.ChoiceField(initial=RunAll.Grading.AI, label="Grade each run")
    max_runs = forms.IntegerField(
        required=False,
        min_value=1,
        label="How many runs",
        help_text="An infinite test never runs out of runs: say how many to run.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["grade"].choices = [  # type: ignore[attr-defined]
            (RunAll.Grading.AI.value, f"with {grader_words()}"),
            (RunAll.Grading.NONE.value, "no, end them ungraded"),
        ]


class StopForm(forms.Form):
    """Stop names an invocation, or none: then the test's newest open one (either stops it all)."""

    invocation_id = forms.UUIDField(required=False, widget=forms.HiddenInput)


class ArchiveForm(forms.Form):
    archived = forms.BooleanField(required=False)


class RegradeForm(forms.Form):
    invocation_id = forms.UUIDField(widget=forms.HiddenInput)
    score = forms.FloatField(
        min_value=0,
        max_value=1,
        label="Score (0 to 1)",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    passed = forms.TypedChoiceField(
        choices=[("true", "Passed"), ("false", "Not passed")],
        coerce=lambda value: value == "true",
        label="Verdict",
    )
    feedback = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    reason = forms.CharField(
        label="Reason for the override", widget=forms.Textarea(attrs={"rows": 2}), max_length=2000
    )
