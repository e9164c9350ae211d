"""Benchmark entries in the admin: the form starts with an empty message list, not null, and an
entry added without a position goes after the benchmark's last one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests import factories
from tests_app.models import BenchmarkEntry

pytestmark = pytest.mark.django_db


def test_the_add_form_starts_with_no_messages_and_no_required_position(
    admin_client: Client,
) -> None:
    response = admin_client.get(reverse("admin:tests_app_benchmarkentry_add"))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.get_initial_for_field(form.fields["messages"], "messages") == []
    assert form["messages"].value() == "[]"  # what the textarea shows, not "null"
    assert form.fields["position"].required is False


def test_an_entry_added_without_a_position_goes_last(admin_client: Client, research: Any) -> None:
    benchmark = factories.make_benchmark(department=research, entries=2)
    messages = factories.conversation(2)

    response = admin_client.post(
        reverse("admin:tests_app_benchmarkentry_add"),
        {
            "benchmark": str(benchmark.pk),
            "position": "",
            "title": "Added in the admin",
            "messages": json.dumps(messages),
        },
    )

    assert response.status_code == 302, response.content
    entry = BenchmarkEntry.objects.get(title="Added in the admin")
    assert (entry.position, entry.messages, entry.turns) == (3, messages, 2)


def test_two_entries_added_inline_without_positions_are_numbered_in_order(
    admin_client: Client, research: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=1)
    url = reverse("admin:tests_app_benchmark_change", args=[benchmark.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data: dict[str, Any] = {
        name: value
        for name, value in form.initial.items()
        if value is not None and not isinstance(value, (list, dict))
    }
    data.update({name: str(getattr(value, "pk", value)) for name, value in data.items()})
    prefix = "entries"
    existing = benchmark.entries.get()
    data.update(
        {
            f"{prefix}-TOTAL_FORMS": "3",
            f"{prefix}-INITIAL_FORMS": "1",
            f"{prefix}-0-id": str(existing.pk),
            f"{prefix}-0-benchmark": str(benchmark.pk),
            f"{prefix}-0-position": "1",
            f"{prefix}-0-title": existing.title,
            f"{prefix}-0-messages": json.dumps(existing.messages),
        }
    )
    for index, title in ((1, "Second"), (2, "Third")):
        data.update(
            {
                f"{prefix}-{index}-benchmark": str(benchmark.pk),
                f"{prefix}-{index}-position": "",
                f"{prefix}-{index}-title": title,
                f"{prefix}-{index}-messages": json.dumps(factories.conversation(1)),
            }
        )

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context and [
        form.errors for form in response.context["inline_admin_formsets"][0].formset.forms
    ]
    assert list(benchmark.entries.order_by("position").values_list("title", "position")) == [
        (existing.title, 1),
        ("Second", 2),
        ("Third", 3),
    ]
