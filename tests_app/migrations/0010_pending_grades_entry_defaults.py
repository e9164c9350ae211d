"""Pending AI grades counted on the test, so a websocket client knows when the last grade is in;
benchmark entries start with no messages rather than null and take the next position when none is
given.

The counter starts from the grades that are pending now.
"""

from django.db import migrations, models
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce


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
        migrations.RunPython(count_pending_grades, migrations.RunPython.noop),
    ]
