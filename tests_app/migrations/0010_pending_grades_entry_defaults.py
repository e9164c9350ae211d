"""Pending AI grades counted on the test, so a websocket client knows when the last grade is in;
benchmark entries start with no messages rather than null and take the next position when none is
given.

The counter starts from the grades that are pending now.

SQLite rebuilds a table to add a column that is not null, which drops the table's triggers and
fails on the views that read it: there, the analytics views (0002) and the day count triggers
(0007) are dropped before the tables change and made again after, as 0006 does.
"""

import importlib

from django.db import migrations, models
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce


def _sqlite_dependents():
    """The statements that make and drop the views and triggers on the tests table."""
    analytics = importlib.import_module("tests_app.migrations.0002_analytics")
    day_counts = importlib.import_module("tests_app.migrations.0007_test_day_count_targets")
    return (
        [*analytics.SQLITE_FORWARD, *day_counts.SQLITE_CREATE],
        [*analytics.SQLITE_REVERSE, *day_counts.SQLITE_DROP],
    )


def drop_sqlite_dependents(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _sqlite_dependents()[1]:
            schema_editor.execute(statement)


def make_sqlite_dependents(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _sqlite_dependents()[0]:
            schema_editor.execute(statement)


def count_pending_grades(apps, schema_editor):
    Test = apps.get_model("tests_app", "Test")
    Grade = apps.get_model("tests_app", "Grade")
    pending = (
        Grade.objects.filter(status="pending", invocation__test_id=OuterRef("pk"))
        .values("invocation__test_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    Test.objects.filter(
        pk__in=Grade.objects.filter(status="pending").values("invocation__test_id")
    ).update(pending_grades=Coalesce(Subquery(pending), 0))


class Migration(migrations.Migration):
    dependencies = [
        ("tests_app", "0009_run_all"),
    ]

    operations = [
        migrations.RunPython(drop_sqlite_dependents, make_sqlite_dependents),
        migrations.AddField(
            model_name="test",
            name="pending_grades",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="benchmarkentry",
            name="messages",
            field=models.JSONField(
                default=list, help_text="The recorded conversation in OpenAI chat format."
            ),
        ),
        migrations.AlterField(
            model_name="benchmarkentry",
            name="position",
            field=models.PositiveIntegerField(
                blank=True, help_text="Order within the benchmark; empty: after the last entry."
            ),
        ),
        migrations.RunPython(make_sqlite_dependents, drop_sqlite_dependents),
        migrations.RunPython(count_pending_grades, migrations.RunPython.noop),
    ]
