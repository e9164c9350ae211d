"""Run-all (issue 20): the row that holds a run-all's state, and the run-all that claimed an
invocation. At most one active run-all per test, enforced by a partial unique index.

SQLite rebuilds the invocations table to drop the column again (backwards), which fails on the
turn count triggers (0008) that read it: there they are dropped before and made again after.
"""

import importlib

import django.db.models.deletion
import django.utils.timezone
import uuid
from django.conf import settings
from django.db import migrations, models


def _step_triggers():
    turn_counts = importlib.import_module("tests_app.migrations.0008_test_turn_counts")
    creates = [
        statement
        for statement in turn_counts.SQLITE_FORWARD
        if statement.strip().startswith("CREATE TRIGGER")
    ]
    return creates, turn_counts.SQLITE_REVERSE


def drop_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _step_triggers()[1]:
            schema_editor.execute(statement)


def make_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _step_triggers()[0]:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("tests_app", "0008_test_turn_counts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(drop_sqlite_triggers, make_sqlite_triggers),
        migrations.CreateModel(
            name="RunAll",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(default=django.utils.timezone.now, editable=False),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("active", "Active"),
                            ("finished", "Finished"),
                            ("stopped", "Stopped"),
                        ],
                        default="active",
                        max_length=16,
                    ),
                ),
                ("concurrency", models.PositiveSmallIntegerField()),
                (
                    "grade",
                    models.CharField(
                        choices=[
                            (
                                "ai",
                                "The configured judge (the offline reference grader without one)",
                            ),
                            ("none", "Ended ungraded"),
                        ],
                        default="ai",
                        max_length=8,
                    ),
                ),
                ("max_runs", models.PositiveIntegerField(blank=True, null=True)),
                (
                    "client",
                    models.CharField(
                        choices=[("browser", "Browser"), ("agent", "Agent"), ("mcp", "Mcp")],
                        default="browser",
                        max_length=16,
                    ),
                ),
                ("ticked_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("finish_reason", models.CharField(blank=True, max_length=32)),
                (
                    "started_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "test",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="run_alls",
                        to="tests_app.test",
                    ),
                ),
            ],
            options={
                "verbose_name": "run-all",
                "ordering": ["-created_at"],
            },
        ),
        migrations.AddField(
            model_name="testinvocation",
            name="run_all",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="invocations",
                to="tests_app.runall",
            ),
        ),
        migrations.AddIndex(
            model_name="testinvocation",
            index=models.Index(
                condition=models.Q(("run_all__isnull", False)),
                fields=["run_all", "status"],
                name="invocation_run_all_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="runall",
            index=models.Index(
                condition=models.Q(("status", "active")),
                fields=["ticked_at"],
                name="run_all_active_idx",
            ),
        ),
        migrations.AddConstraint(
            model_name="runall",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "active")),
                fields=("test",),
                name="run_all_one_active_per_test",
            ),
        ),
        migrations.AddConstraint(
            model_name="runall",
            constraint=models.CheckConstraint(
                condition=models.Q(("concurrency__gte", 1), ("concurrency__lte", 64)),
                name="run_all_concurrency_1_64",
            ),
        ),
        migrations.AddConstraint(
            model_name="runall",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("max_runs__isnull", True), ("max_runs__gte", 1), _connector="OR"
                ),
                name="run_all_max_runs_positive",
            ),
        ),
        migrations.RunPython(make_sqlite_triggers, drop_sqlite_triggers),
    ]
