"""The Django admin for staff and department operators.

Staff maintain departments, memberships, rubrics, evals and benchmarks here, under Django's own
permissions. Operators (not staff) see the rows of the departments they operate and maintain
their evals, targets, benchmarks and entries; everything else is staff only (docs/admin.md,
``DepartmentScopedAdmin``). Everything a test
produces (runs, invocations, steps, grades, exports) is read-only: those rows and their status
fields only change through ``tests_app.services``, so the admin shows them and offers actions that
call the services (archive / unarchive), never a form that writes a status.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from tests_app import cache_tags
from tests_app.actors import CLIENT_BROWSER, Actor
from tests_app.errors import DomainError
from tests_app.models import (
    ApiKey,
    Benchmark,
    BenchmarkEntry,
    Department,
    Eval,
    Grade,
    Membership,
    ReplayStep,
    Rubric,
    RunAll,
    Target,
    Test,
    TestDayCount,
    TestInvocation,
    TestRun,
    TestTurnCount,
    Upload,
)
from tests_app.selectors import scope
from tests_app.services.api_keys import issue_key, revoke_keys
from tests_app.services.importing import (
    BenchmarkFileInvalid,
    bad_lines_report,
    import_benchmark_file,
    imported_summary,
    message_problems,
)

User = get_user_model()

# Read-only inlines show this many rows at most, with a link to the full, filtered list.
INLINE_LIMIT = 20
# Benchmarks with more entries than this are edited entry by entry, not in one giant form.
ENTRY_INLINE_LIMIT = 100

# The library registers the admin of its own APIKey model, which this project does not use (keys
# are tests_app.ApiKey, tied to a user); showing both would send operators to the wrong one.
if admin.site.is_registered(LibraryAPIKey):
    admin.site.unregister(LibraryAPIKey)


def _admin_link(obj: Model | None, label: str | None = None) -> str:
    if obj is None:
        return "-"
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def _changelist_link(model: type[Model], label: str, **filters: Any) -> str:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return format_html('<a href="{}?{}">{}</a>', url, query, label)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _search_by_uuid(queryset: QuerySet[Any], search_term: str) -> QuerySet[Any] | None:
    # Operators paste ids from the API; a UUID search is an exact match on the primary key.
    try:
        return queryset.filter(pk=uuid.UUID(search_term.strip()))
    except ValueError:
        return None


class UuidSearchMixin:
    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        by_id = _search_by_uuid(queryset, search_term)
        if by_id is not None:
            return by_id, False
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]


def _operated_departments(request: HttpRequest) -> list[uuid.UUID] | None:
    """The departments a non-staff user operates, or None for staff (Django's permissions)."""
    if request.user.is_staff:
        return None
    if not request.user.is_authenticated:
        return []  # the login page asks too
    return scope.operable_department_ids(request.user) or []


def _department_id_of(obj: Model, path: str) -> Any:
    """The id of the department that ``path`` (a lookup such as ``eval__department``) reaches."""
    *hops, last = path.split("__")
    for hop in hops:
        obj = getattr(obj, hop)
    return obj.pk if last == "pk" else getattr(obj, f"{last}_id")


def _registered_admin(site: admin.AdminSite, model: Any) -> Any:
    """The ModelAdmin that ``site`` has for ``model``, or None."""
    return site.get_model_admin(model) if site.is_registered(model) else None


class DepartmentScopedAdmin(admin.ModelAdmin):
    """Staff keep Django's permissions; an operator sees the rows of the departments they
    operate (``department_path`` leads from a row to its department) and changes them only where
    ``operators_may_edit``. Without a path, operators see nothing, unless the rows are shared by
    every department (``shared_with_operators``, rubrics), which they may read.

    Rows outside those departments are not in the queryset, so their pages are "not found" like
    in the API, and the choices of a row's foreign keys are scoped the same way, so a forged form
    cannot point a benchmark at another department's eval.
    """

    department_path: str | None = None
    shared_with_operators = False
    operators_may_edit = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        departments = _operated_departments(request)
        if departments is None:
            return queryset
        if self.department_path is None:
            return queryset if self.shared_with_operators else queryset.none()
        return queryset.filter(**{f"{self.department_path}__in": departments})

    def _operates(self, request: HttpRequest, obj: Any = None) -> bool:
        departments = _operated_departments(request) or []
        if not departments:
            return False
        if self.department_path is None:
            return self.shared_with_operators
        if obj is None:
            return True
        return _department_id_of(obj, self.department_path) in departments

    def has_module_permission(self, request: HttpRequest) -> bool:
        if request.user.is_staff:
            return super().has_module_permission(request)
        return self._operates(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if request.user.is_staff:
            return super().has_view_permission(request, obj)
        return self._operates(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        if request.user.is_staff:
            return super().has_add_permission(request)
        return self.operators_may_edit and self._operates(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if request.user.is_staff:
            return super().has_change_permission(request, obj)
        return self.operators_may_edit and self._operates(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if request.user.is_staff:
            return super().has_delete_permission(request, obj)
        return self.operators_may_edit and self._operates(request, obj)

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField | None:
        related = _registered_admin(self.admin_site, db_field.related_model)
        if (
            _operated_departments(request) is not None
            and isinstance(related, DepartmentScopedAdmin)
            and related.department_path is not None
        ):
            kwargs["queryset"] = related.get_queryset(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A list filter on a related row that offers an operator only the rows they may see (the
    stock filter lists every department, eval or test by name)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        related = _registered_admin(model_admin.admin_site, field.related_model)
        if _operated_departments(request) is None or not isinstance(related, DepartmentScopedAdmin):
            return super().field_choices(field, request, model_admin)
        return field.get_choices(
            include_blank=False,
            ordering=self.field_admin_ordering(field, request, model_admin),
            limit_choices_to={"pk__in": related.get_queryset(request).values("pk")},
        )


class ReadOnlyAdmin(UuidSearchMixin, DepartmentScopedAdmin):
    """Rows written by services: viewable, never added, edited or deleted here.

    Deleting a run or a grade would leave the test's counters wrong, and deleting a test would
    make Django collect every nested row for the confirmation page; archiving is the way out.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """A bounded, read-only list of the newest rows of a parent (see get_formset_kwargs below)."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    limit = INLINE_LIMIT
    newest_first: tuple[str, ...] = ("-created_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An operator reaches an inline only through a parent already scoped to their departments.
        if not request.user.is_staff:
            return bool(_operated_departments(request))
        return super().has_view_permission(request, obj)

    def bounded_queryset(self, request: HttpRequest, parent: Model) -> QuerySet[Any]:
        fk_name = self.fk_name or _fk_name(self.model, type(parent))
        newest = (
            self.model._default_manager.filter(**{fk_name: parent})
            .order_by(*self.newest_first)
            .values("pk")[: self.limit]
        )
        # A sliced queryset cannot be filtered by the inline formset, a pk__in subquery can.
        return (
            self.get_queryset(request).filter(pk__in=Subquery(newest)).order_by(*self.newest_first)
        )


def _fk_name(model: type[Model], parent: type[Model]) -> str:
    for field in model._meta.get_fields():
        if field.many_to_one and field.related_model is parent:
            return field.name
    raise LookupError(f"{model.__name__} has no foreign key to {parent.__name__}")


class BoundedInlinesMixin:
    """Give every ReadOnlyInline only the newest ``limit`` rows of the object shown."""

    def get_formset_kwargs(
        self, request: HttpRequest, obj: Any, inline: Any, prefix: str
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().get_formset_kwargs(request, obj, inline, prefix)  # type: ignore[misc]
        if isinstance(inline, ReadOnlyInline) and obj is not None and obj.pk is not None:
            kwargs["queryset"] = inline.bounded_queryset(request, obj)
        return kwargs


# --- organisation -----------------------------------------------------------------------------


class MembershipInlineForDepartment(admin.TabularInline):
    model = Membership
    fk_name = "department"
    fields = ("user", "role")
    autocomplete_fields = ("user",)
    extra = 0


class MembershipInlineForUser(admin.TabularInline):
    model = Membership
    fk_name = "user"
    fields = ("department", "role")
    autocomplete_fields = ("department",)
    extra = 0


class InvalidatesTestCachesMixin:
    """Names and descriptions of these rows appear in cached docs, facets and gets of tests."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        cache_tags.invalidate_on_commit(*cache_tags.all_tags())

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)  # type: ignore[misc]
        cache_tags.invalidate_on_commit(*cache_tags.all_tags())


@admin.register(Department)
class DepartmentAdmin(InvalidatesTestCachesMixin, DepartmentScopedAdmin):
    department_path = "pk"  # operators see their departments; memberships are staff's
    # Counted rows lose the model's default order (GROUP BY); lists and autocompletes page by it.
    ordering = ("name",)
    list_display = ("name", "slug", "member_count", "eval_count", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at", "updated_at")
    inlines = (MembershipInlineForDepartment,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Department]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=Count("memberships", distinct=True),
                eval_total=Count("evals", distinct=True),
            )
        )

    @admin.display(description="members", ordering="member_total")
    def member_count(self, obj: Any) -> int:
        return int(obj.member_total)

    @admin.display(description="evals", ordering="eval_total")
    def eval_count(self, obj: Any) -> int:
        return int(obj.eval_total)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "department", "role", "created_at")
    list_filter = ("role", "department")
    search_fields = ("user__username", "user__email", "department__name")
    autocomplete_fields = ("user", "department")
    list_select_related = ("user", "department")
    readonly_fields = ("created_at", "updated_at")


class ApiKeyInlineForUser(ReadOnlyInline):
    model = ApiKey
    fields = ("name", "prefix", "created", "last_used_at", "expiry_date", "revoked")
    readonly_fields = fields
    newest_first = ("-created",)
    verbose_name_plural = "API keys (add one from API keys; the secret is shown once)"


# Memberships and keys are easiest to manage from the person they belong to.
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class UserAdmin(BoundedInlinesMixin, DjangoUserAdmin):
    inlines = (MembershipInlineForUser, ApiKeyInlineForUser)


# --- what is measured -------------------------------------------------------------------------


class RubricForm(forms.ModelForm):
    class Meta:
        model = Rubric
        fields = ("name", "description", "criteria", "pass_threshold", "judge_instructions")

    def clean_criteria(self) -> Any:
        criteria = self.cleaned_data.get("criteria")
        if not isinstance(criteria, list):
            raise forms.ValidationError('Criteria must be a JSON list of {"name", "weight", ...}.')
        for index, criterion in enumerate(criteria, start=1):
            if not isinstance(criterion, dict) or not str(criterion.get("name") or "").strip():
                raise forms.ValidationError(f"Criterion {index} needs a name.")
            weight = criterion.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
                raise forms.ValidationError(f"Criterion {index} needs a positive number weight.")
        return criteria


@admin.register(Rubric)
class RubricAdmin(InvalidatesTestCachesMixin, DepartmentScopedAdmin):
    # Shared by every department's evals: operators read them, staff change them.
    shared_with_operators = True
    form = RubricForm
    list_display = ("name", "pass_threshold", "criteria_count", "updated_at")
    search_fields = ("name", "description")
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="criteria")
    def criteria_count(self, obj: Rubric) -> int:
        return len(obj.criteria) if isinstance(obj.criteria, list) else 0


@admin.register(Eval)
class EvalAdmin(InvalidatesTestCachesMixin, DepartmentScopedAdmin):
    department_path = "department"
    operators_may_edit = True
    list_display = ("name", "department", "rubric", "benchmark_count", "updated_at")
    # Counted rows lose the model's default order (GROUP BY); lists and autocompletes page by it.
    ordering = ("name",)
    list_filter = (("department", ScopedRelatedFilter),)
    search_fields = ("name", "description", "department__name")
    autocomplete_fields = ("department", "rubric")
    list_select_related = ("department", "rubric")
    readonly_fields = ("created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Eval]:
        return super().get_queryset(request).annotate(benchmark_total=Count("benchmarks"))

    @admin.display(description="benchmarks", ordering="benchmark_total")
    def benchmark_count(self, obj: Any) -> int:
        return int(obj.benchmark_total)


class BenchmarkEntryForm(forms.ModelForm):
    class Meta:
        model = BenchmarkEntry
        fields = ("benchmark", "position", "title", "messages")

    def clean_messages(self) -> Any:
        messages_value = self.cleaned_data.get("messages")
        problems = message_problems(messages_value)
        if problems:
            raise forms.ValidationError(problems)
        return messages_value


class BenchmarkEntryInline(admin.StackedInline):
    model = BenchmarkEntry
    form = BenchmarkEntryForm
    fields = ("position", "title", "messages", "turns")
    readonly_fields = ("turns",)
    extra = 0
    show_change_link = True

    # The benchmark around these entries is already one of the operator's departments.
    def _operator(self, request: HttpRequest) -> bool | None:
        return None if request.user.is_staff else bool(_operated_departments(request))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = self._operator(request)
        return super().has_view_permission(request, obj) if allowed is None else allowed

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = self._operator(request)
        return super().has_add_permission(request, obj) if allowed is None else allowed

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = self._operator(request)
        return super().has_change_permission(request, obj) if allowed is None else allowed

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = self._operator(request)
        return super().has_delete_permission(request, obj) if allowed is None else allowed


class TargetForm(forms.ModelForm):
    base_url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text=Target._meta.get_field("base_url").help_text,
    )

    class Meta:
        model = Target
        fields = (
            "name",
            "department",
            "kind",
            "model",
            "base_url",
            "api_key_env",
            "temperature",
            "max_tokens",
            "seed",
            "timeout_s",
            "max_retries",
            "price_in",
            "price_out",
        )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if self.errors:
            return cleaned
        # The model client loads with the worker's tasks, not with the admin at every start.
        from tests_app.targets import records

        # The same checks as the client that the replay builds from the snapshot.
        candidate = Target(**{name: cleaned.get(name) for name in self.Meta.fields})
        try:
            records.validate(candidate)
        except DomainError as error:
            fields = error.fields or {}
            for name, problems in fields.items():
                if name in self.fields:
                    self.add_error(name, problems)
                else:
                    self.add_error(None, problems)
            if not fields:
                self.add_error(None, error.detail)
        return cleaned


@admin.register(Target)
class TargetAdmin(InvalidatesTestCachesMixin, UuidSearchMixin, DepartmentScopedAdmin):
    """Targets of each department. Tests keep a snapshot of their target taken at start, so an
    edit here changes only the tests started afterwards."""

    department_path = "department"
    operators_may_edit = True

    form = TargetForm
    list_display = (
        "name",
        "department",
        "kind",
        "model",
        "base_url",
        "api_key_env",
        "price_in",
        "price_out",
        "updated_at",
    )
    list_filter = ("kind", ("department", ScopedRelatedFilter))
    search_fields = ("name", "model", "base_url", "department__name")
    autocomplete_fields = ("department",)
    list_select_related = ("department",)
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "department", "kind")}),
        (
            "OpenAI-compatible server",
            {
                "fields": (
                    "model",
                    "base_url",
                    "api_key_env",
                    "temperature",
                    "max_tokens",
                    "seed",
                    "timeout_s",
                    "max_retries",
                ),
                "description": "Never paste a secret: name the environment variable that holds "
                "the key in api_key_env; the worker reads it when it calls the model.",
            },
        ),
        ("Prices (per million tokens)", {"fields": ("price_in", "price_out")}),
        ("Record", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )


class BenchmarkForm(forms.ModelForm):
    class Meta:
        model = Benchmark
        fields = ("name", "eval", "default_target", "runs_per_entry", "replay_mode")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        evaluation, target = cleaned.get("eval"), cleaned.get("default_target")
        if (
            evaluation is not None
            and target is not None
            and target.department_id != evaluation.department_id
        ):
            self.add_error(
                "default_target",
                f"{target} belongs to another department than the eval "
                f"({evaluation.department}); choose one of its targets.",
            )
        return cleaned


class BenchmarkImportForm(forms.Form):
    """What ``manage.py import_benchmark`` takes, as a form; the import itself is the service's."""

    file = forms.FileField(
        label="JSONL file",
        help_text='One conversation a line: {"messages": [...], "title": "..."} (OpenAI chat '
        "format). Every line is checked first; nothing is imported unless all are good.",
    )
    eval = forms.ModelChoiceField(queryset=Eval.objects.none())
    name = forms.CharField(
        required=False,
        max_length=Benchmark._meta.get_field("name").max_length,
        help_text="Default: the file's name without its extension.",
    )
    target = forms.ModelChoiceField(
        queryset=Target.objects.none(),
        required=False,
        label="Default target",
        help_text="A target of the eval's department. Default: that department's offline "
        "reference target.",
    )

    def __init__(
        self, *args: Any, evals: QuerySet[Eval], targets: QuerySet[Target], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["eval"].queryset = evals  # type: ignore[attr-defined]
        self.fields["target"].queryset = targets  # type: ignore[attr-defined]


@admin.register(Benchmark)
class BenchmarkAdmin(InvalidatesTestCachesMixin, UuidSearchMixin, DepartmentScopedAdmin):
    department_path = "eval__department"
    operators_may_edit = True
    # Counted rows lose the model's default order (GROUP BY); lists and autocompletes page by it.
    ordering = ("name",)
    form = BenchmarkForm
    change_list_template = "admin/tests_app/benchmark/change_list.html"
    list_display = (
        "name",
        "eval",
        "department",
        "default_target",
        "entry_count",
        "runs_per_entry",
        "replay_mode",
        "updated_at",
    )
    list_filter = (
        "replay_mode",
        ("eval__department", ScopedRelatedFilter),
        ("eval", ScopedRelatedFilter),
    )
    search_fields = ("name", "eval__name")
    autocomplete_fields = ("eval", "default_target")
    list_select_related = ("eval__department", "default_target")
    readonly_fields = ("entries_link", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "eval", "runs_per_entry", "replay_mode")}),
        ("Model under test", {"fields": ("default_target",)}),
        ("Entries", {"fields": ("entries_link",)}),
        ("Record", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Benchmark]:
        return super().get_queryset(request).annotate(entry_total=Count("entries"))

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_jsonl_view),
                name="tests_app_benchmark_import",
            ),
            *super().get_urls(),
        ]

    def import_jsonl_view(self, request: HttpRequest) -> HttpResponse:
        """A new benchmark from a JSONL file: ``import_benchmark``'s service, checks and words."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        site = self.admin_site
        form = BenchmarkImportForm(
            request.POST or None,
            request.FILES or None,
            evals=site.get_model_admin(Eval)
            .get_queryset(request)
            .select_related("department")
            .order_by("name"),
            targets=site.get_model_admin(Target).get_queryset(request).order_by("name"),
        )
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                benchmark = import_benchmark_file(
                    eval=form.cleaned_data["eval"],
                    name=form.cleaned_data["name"] or upload.name.rsplit(".", 1)[0],
                    file=upload,
                    target=form.cleaned_data["target"],
                )
            except BenchmarkFileInvalid as error:
                form.add_error("file", bad_lines_report(error))
            except DomainError as error:
                # The service's sentence, beside the field it is about when it names one.
                field = next((name for name in error.fields or {} if name in form.fields), None)
                form.add_error(field, error.detail)
            else:
                cache_tags.invalidate_on_commit(*cache_tags.all_tags())
                self.message_user(request, imported_summary(benchmark), messages.SUCCESS)
                return redirect(reverse("admin:tests_app_benchmark_change", args=[benchmark.pk]))
        return TemplateResponse(
            request,
            "admin/tests_app/benchmark/import_jsonl.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Import a benchmark from a JSONL file",
                "form": form,
            },
        )

    def get_inlines(
        self, request: HttpRequest, obj: Any
    ) -> list[type[admin.options.InlineModelAdmin]]:
        # A benchmark imported with thousands of entries would make one unusable form.
        if obj is not None and getattr(obj, "entry_total", 0) > ENTRY_INLINE_LIMIT:
            return []
        return [BenchmarkEntryInline]

    @admin.display(description="department", ordering="eval__department__name")
    def department(self, obj: Benchmark) -> str:
        return str(obj.eval.department)

    @admin.display(description="entries", ordering="entry_total")
    def entry_count(self, obj: Any) -> int:
        return int(obj.entry_total)

    @admin.display(description="all entries")
    def entries_link(self, obj: Any) -> str:
        if obj is None or obj._state.adding:
            return (
                "Save the benchmark first, then add entries below; or create it from a file "
                "with Import JSONL on the list of benchmarks."
            )
        return _changelist_link(
            BenchmarkEntry, f"Open the {obj.entry_total} entries as a list", benchmark=obj.pk
        )


@admin.register(BenchmarkEntry)
class BenchmarkEntryAdmin(UuidSearchMixin, DepartmentScopedAdmin):
    department_path = "benchmark__eval__department"
    operators_may_edit = True
    form = BenchmarkEntryForm
    list_display = ("__str__", "benchmark", "position", "turns", "updated_at")
    list_filter = (
        ("benchmark__eval__department", ScopedRelatedFilter),
        ("benchmark__eval", ScopedRelatedFilter),
    )
    search_fields = ("title", "benchmark__name")
    autocomplete_fields = ("benchmark",)
    list_select_related = ("benchmark",)
    readonly_fields = ("turns", "created_at", "updated_at")
    ordering = ("benchmark__name", "position")
    show_full_result_count = False


# --- what a test produced (read-only) --------------------------------------------------------


class RunInline(ReadOnlyInline):
    model = TestRun
    fields = ("ordinal", "cycle", "entry", "status", "attempts", "score", "passed")
    readonly_fields = fields
    newest_first = ("-cycle", "-ordinal")
    verbose_name_plural = f"runs (newest {INLINE_LIMIT}; the link above lists all)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[TestRun]:
        return super().get_queryset(request).select_related("entry")


class InvocationInline(ReadOnlyInline):
    model = TestInvocation
    fk_name = "test"
    fields = ("status", "run", "client", "actor", "started_at", "ended_at", "steps_count", "error")
    readonly_fields = fields
    verbose_name_plural = f"invocations (newest {INLINE_LIMIT}; the link above lists all)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[TestInvocation]:
        return super().get_queryset(request).select_related("run", "actor")


class UploadInline(ReadOnlyInline):
    model = Upload
    fields = ("file_name", "row_count", "size_bytes", "created_by", "created_at")
    readonly_fields = fields
    verbose_name_plural = f"exports (newest {INLINE_LIMIT})"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Upload]:
        return super().get_queryset(request).select_related("created_by")


def _set_archived(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Test], archived: bool
) -> None:
    # Imported here: the archiving service belongs to the lifecycle work and the admin must load
    # whether or not it is present.
    from tests_app.services.archiving import set_archived

    actor = Actor(user=request.user, client=CLIENT_BROWSER)  # type: ignore[arg-type]
    test_ids = list(queryset.values_list("pk", flat=True)[: TestAdmin.ARCHIVE_LIMIT])
    try:
        changed = set_archived(actor=actor, test_ids=test_ids, archived=archived)
    except DomainError as error:
        modeladmin.message_user(request, error.detail, messages.ERROR)
        return
    verb = "Archived" if archived else "Unarchived"
    capped = (
        f" At most {TestAdmin.ARCHIVE_LIMIT} tests per action: run it again for the rest."
        if len(test_ids) == TestAdmin.ARCHIVE_LIMIT
        else ""
    )
    modeladmin.message_user(
        request,
        f"{verb} {changed} test(s); {len(test_ids) - changed} already were.{capped}",
        messages.SUCCESS,
    )


@admin.register(Test)
class TestAdmin(BoundedInlinesMixin, ReadOnlyAdmin):
    ARCHIVE_LIMIT = 1000  # the archive endpoint's own bound
    department_path = "department"

    list_display = (
        "short_id",
        "benchmark",
        "target",
        "eval",
        "department",
        "status",
        "progress",
        "pass_rate_display",
        "mean_score_display",
        "infinite_mode",
        "cycle",
        "is_archived",
        "created_by",
        "created_at",
    )
    list_filter = (
        "status",
        "is_archived",
        "infinite_mode",
        ("department", ScopedRelatedFilter),
        ("eval", ScopedRelatedFilter),
    )
    search_fields = (
        "benchmark__name",
        "eval__name",
        "department__name",
        "target__name",
        "created_by__username",
    )
    autocomplete_fields = ("benchmark", "eval", "department", "target", "created_by")
    list_select_related = ("benchmark", "target", "eval", "department", "created_by")
    show_full_result_count = False
    list_per_page = 50
    actions = ("archive_tests", "unarchive_tests")
    readonly_fields = ("runs_link", "invocations_link", "target_snapshot_json")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "benchmark",
                    "target",
                    "target_snapshot_json",
                    "eval",
                    "department",
                    "status",
                    "infinite_mode",
                    "cycle",
                    "is_archived",
                    "created_by",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "current_invocation",
                )
            },
        ),
        (
            "Counters",
            {
                "fields": (
                    "total_runs",
                    "completed_runs",
                    "graded_runs",
                    "passed_runs",
                    "score_sum",
                )
            },
        ),
        ("All rows", {"fields": ("runs_link", "invocations_link")}),
    )
    inlines = (RunInline, InvocationInline, UploadInline)

    def has_archive_permission(self, request: HttpRequest) -> bool:
        # The service checks the caller's departments again; this only hides the action.
        if not request.user.is_staff:
            return bool(_operated_departments(request))
        return bool(request.user.has_perm("tests_app.change_test"))

    @admin.action(description="Archive the selected tests", permissions=["archive"])
    def archive_tests(self, request: HttpRequest, queryset: QuerySet[Test]) -> None:
        _set_archived(self, request, queryset, archived=True)

    @admin.action(description="Unarchive the selected tests", permissions=["archive"])
    def unarchive_tests(self, request: HttpRequest, queryset: QuerySet[Test]) -> None:
        _set_archived(self, request, queryset, archived=False)

    @admin.display(description="test", ordering="created_at")
    def short_id(self, obj: Test) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="runs done")
    def progress(self, obj: Test) -> str:
        return f"{obj.completed_runs}/{obj.total_runs}"

    @admin.display(description="pass rate")
    def pass_rate_display(self, obj: Test) -> str:
        return _percent(obj.pass_rate)

    @admin.display(description="mean score")
    def mean_score_display(self, obj: Test) -> str:
        return "-" if obj.mean_score is None else f"{obj.mean_score:.2f}"

    @admin.display(description="target as it ran (snapshot at start)")
    def target_snapshot_json(self, obj: Test) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.target_snapshot, indent=2))

    @admin.display(description="runs")
    def runs_link(self, obj: Test) -> str:
        return _changelist_link(TestRun, f"All {obj.total_runs} runs of this test", test=obj.pk)

    @admin.display(description="invocations")
    def invocations_link(self, obj: Test) -> str:
        return _changelist_link(TestInvocation, "All invocations of this test", test=obj.pk)


@admin.register(TestRun)
class TestRunAdmin(BoundedInlinesMixin, ReadOnlyAdmin):
    department_path = "test__department"
    list_display = (
        "__str__",
        "test_link",
        "entry",
        "status",
        "attempts",
        "score",
        "passed",
        "updated_at",
    )
    list_filter = ("status", "passed", ("test__department", ScopedRelatedFilter))
    search_fields = ("entry__title", "test__benchmark__name")
    autocomplete_fields = ("test", "entry", "latest_invocation")
    list_select_related = ("test", "entry")
    show_full_result_count = False
    list_per_page = 50
    ordering = ("-created_at",)

    class InvocationOfRunInline(ReadOnlyInline):
        model = TestInvocation
        fk_name = "run"
        fields = ("status", "client", "actor", "started_at", "ended_at", "steps_count", "error")
        readonly_fields = fields

    inlines = (InvocationOfRunInline,)

    @admin.display(description="test")
    def test_link(self, obj: TestRun) -> str:
        return _admin_link(obj.test, str(obj.test_id)[:8])


class StepInline(ReadOnlyInline):
    model = ReplayStep
    fields = ("turn", "input", "output", "reference", "latency_ms", "error")
    readonly_fields = fields
    newest_first = ("turn",)
    limit = 200  # turns of one conversation; a longer one is listed in full by the link


class GradeInline(ReadOnlyInline):
    model = Grade
    fields = ("source", "status", "score", "passed", "feedback", "actor", "reason", "created_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grade]:
        return super().get_queryset(request).select_related("actor")


@admin.register(TestInvocation)
class TestInvocationAdmin(BoundedInlinesMixin, ReadOnlyAdmin):
    department_path = "test__department"
    list_display = (
        "short_id",
        "test_link",
        "run",
        "status",
        "client",
        "actor",
        "steps_count",
        "started_at",
        "ended_at",
    )
    list_filter = ("status", "client", "stop_requested")
    search_fields = ("task_id", "actor__username", "test__benchmark__name")
    autocomplete_fields = ("test", "run", "actor")
    list_select_related = ("test", "run", "actor")
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = ("steps_link", "grades_link")
    inlines = (StepInline, GradeInline)

    @admin.display(description="invocation", ordering="created_at")
    def short_id(self, obj: TestInvocation) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="test")
    def test_link(self, obj: TestInvocation) -> str:
        return _admin_link(obj.test, str(obj.test_id)[:8])

    @admin.display(description="all steps")
    def steps_link(self, obj: TestInvocation) -> str:
        return _changelist_link(ReplayStep, "All steps of this invocation", invocation=obj.pk)

    @admin.display(description="all grades")
    def grades_link(self, obj: TestInvocation) -> str:
        return _changelist_link(Grade, "All grades of this invocation", invocation=obj.pk)


@admin.register(ReplayStep)
class ReplayStepAdmin(ReadOnlyAdmin):
    department_path = "invocation__test__department"
    list_display = ("__str__", "invocation", "latency_ms", "prompt_tokens", "completion_tokens")
    search_fields = ("input", "output")
    autocomplete_fields = ("invocation",)
    list_select_related = ("invocation",)
    show_full_result_count = False
    list_per_page = 50
    ordering = ("-created_at",)


@admin.register(Grade)
class GradeAdmin(ReadOnlyAdmin):
    department_path = "invocation__test__department"
    list_display = ("__str__", "invocation", "source", "status", "score", "passed", "created_at")
    list_filter = ("source", "status", "passed")
    search_fields = ("feedback", "reason")
    autocomplete_fields = ("invocation", "actor")
    list_select_related = ("invocation", "actor")
    show_full_result_count = False
    list_per_page = 50
    fields = (
        "invocation",
        "source",
        "status",
        "score",
        "passed",
        "feedback",
        "criteria_json",
        "provenance_json",
        "actor",
        "reason",
        "created_at",
    )
    readonly_fields = ("provenance_json", "criteria_json", "created_at")

    @admin.display(description="provenance")
    def provenance_json(self, obj: Grade) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.provenance, indent=2, sort_keys=True))

    @admin.display(description="criteria scores")
    def criteria_json(self, obj: Grade) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.criteria_scores, indent=2))


@admin.register(Upload)
class UploadAdmin(ReadOnlyAdmin):
    department_path = "test__department"
    list_display = (
        "file_name",
        "test",
        "kind",
        "row_count",
        "size_bytes",
        "created_by",
        "created_at",
    )
    list_filter = ("kind",)
    search_fields = ("file_name",)
    autocomplete_fields = ("test", "created_by")
    list_select_related = ("test", "created_by")
    show_full_result_count = False
    # Media is not served; the API's download checks the caller's scope and streams the file.
    fields = (
        "test",
        "kind",
        "file_name",
        "download",
        "row_count",
        "size_bytes",
        "created_by",
        "created_at",
    )
    readonly_fields = ("download", "created_at")

    @admin.display(description="download")
    def download(self, obj: Upload) -> str:
        return format_html('<a href="/api/v5/uploads/{}/download">{}</a>', obj.pk, obj.file_name)


@admin.register(RunAll)
class RunAllAdmin(ReadOnlyAdmin):
    """Run-alls are started from the API or the pages and ended by their ticks or by stop."""

    department_path = "test__department"

    list_display = (
        "__str__",
        "test",
        "status",
        "concurrency",
        "grade",
        "max_runs",
        "started_by",
        "created_at",
        "finished_at",
        "finish_reason",
    )
    list_filter = ("status", "grade")
    autocomplete_fields = ("test", "started_by")
    ordering = ("-created_at",)
    list_select_related = ("test", "started_by")
    show_full_result_count = False


@admin.register(TestDayCount)
class TestDayCountAdmin(ReadOnlyAdmin):
    """Derived counts, kept by database triggers (migration 0003): shown, never edited here."""

    list_display = ("day", "eval_id", "department_id", "is_archived", "count")
    list_filter = ("is_archived",)
    date_hierarchy = "day"
    ordering = ("-day",)
    show_full_result_count = False


@admin.register(TestTurnCount)
class TestTurnCountAdmin(ReadOnlyAdmin):
    """Derived counts, kept by database triggers (migration 0007): shown, never edited here."""

    list_display = (
        "test_id",
        "cycle",
        "latency_ms",
        "turns",
        "reported_turns",
        "prompt_tokens",
        "completion_tokens",
    )
    ordering = ("test_id", "cycle", "latency_ms")
    show_full_result_count = False


# --- API keys -------------------------------------------------------------------------------


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("user", "name", "expiry_date")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Adding a key shows its secret once, in the message after saving; only a hash is kept."""

    list_display = ("name", "user", "prefix", "created", "last_used_at", "expiry_date", "revoked")
    list_filter = ("revoked", "created")
    search_fields = ("name", "prefix", "user__username")
    autocomplete_fields = ("user",)
    list_select_related = ("user",)
    actions = ("revoke_selected",)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        if obj is None:
            return ["user", "name", "expiry_date"]
        return ["user", "name", "prefix", "created", "last_used_at", "expiry_date", "revoked"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        readonly = ["user", "prefix", "created", "last_used_at"]
        if obj.revoked:
            # Revoking cannot be undone, and a revoked key is kept only as a record.
            readonly += ["name", "expiry_date", "revoked"]
        return readonly

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        raw_key = issue_key(api_key=obj)
        self.message_user(
            request,
            f"The API key {obj.name!r} for {obj.user} is: {raw_key}  "
            "Copy it now: it is stored only as a hash and will not be shown again.",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = revoke_keys(key_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
