"""Targets as rows: each benchmark's ``target`` JSON becomes a Target of its department (one row
per distinct configuration and department), the benchmark's default target; every existing test
gets that target and a snapshot of it, since that is what its replays called. The JSON column goes.

SQLite rebuilds a table to change a column, which drops the table's triggers and fails on the views
that read it: there, the analytics views (0002) and the day count triggers (0003) are dropped
before the tests table changes and made again after.

Benchmarks saved through the admin or the importer had their JSON checked; anything else is read
defensively here (a value of the wrong type falls back to the field's default) so that the
migration cannot fail on old data. Backwards, the default target's configuration is written back
into the JSON column.
"""

import importlib
import json
import uuid

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

REFERENCE_NAME = "Reference (recorded answers)"
CLIENT_KEYS = (
    "model",
    "base_url",
    "api_key_env",
    "temperature",
    "max_tokens",
    "seed",
    "timeout_s",
    "max_retries",
)


def _number(value, default):
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return value


def _integer(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _fields_of(config):
    """Target fields from a benchmark's JSON (``kind`` and the client's settings)."""
    if not isinstance(config, dict) or config.get("kind", "reference") != "openai":
        return {"kind": "reference"}
    text = lambda name: config.get(name) if isinstance(config.get(name), str) else ""  # noqa: E731
    retries = _integer(config.get("max_retries"))
    return {
        "kind": "openai",
        "model": text("model").strip(),
        "base_url": text("base_url"),
        "api_key_env": text("api_key_env"),
        "temperature": float(_number(config.get("temperature"), 0.0)),
        "max_tokens": _integer(config.get("max_tokens")) or None,
        "seed": config.get("seed") if isinstance(config.get("seed"), int) else None,
        "timeout_s": float(_number(config.get("timeout_s"), 60.0)),
        "max_retries": 2 if retries is None else min(retries, 10),
    }


def _snapshot(target):
    # tests_app.targets.records.snapshot_of, as it is when this migration was written.
    if target.kind == "reference":
        config = {"kind": "reference"}
    else:
        config = {
            "kind": "openai",
            "model": target.model,
            "base_url": target.base_url or None,
            "api_key_env": target.api_key_env or None,
            "temperature": target.temperature,
            "max_tokens": target.max_tokens,
            "seed": target.seed,
            "timeout_s": target.timeout_s,
            "max_retries": target.max_retries,
        }
    return {
        **config,
        "id": str(target.pk),
        "name": target.name,
        "price_in": float(target.price_in) if target.price_in is not None else None,
        "price_out": float(target.price_out) if target.price_out is not None else None,
    }


def _name_for(fields, taken):
    if fields["kind"] == "reference":
        base = REFERENCE_NAME
    else:
        base = fields["model"] or "OpenAI-compatible"
    name, number = base, 2
    while name in taken:
        name, number = f"{base} ({number})", number + 1
    return name


def _sqlite_dependents():
    """The statements that make the views and triggers on the tests table, as 0002 and 0003
    wrote them (without 0003's first count of existing tests)."""
    analytics = importlib.import_module("tests_app.migrations.0002_analytics")
    day_counts = importlib.import_module("tests_app.migrations.0003_test_day_counts")
    triggers = [
        statement
        for statement in day_counts.SQLITE_FORWARD
        if statement.strip().startswith("CREATE TRIGGER")
    ]
    return [*analytics.SQLITE_FORWARD, *triggers], [
        *analytics.SQLITE_REVERSE,
        *day_counts.SQLITE_REVERSE,
    ]


def drop_sqlite_dependents(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _sqlite_dependents()[1]:
            schema_editor.execute(statement)


def make_sqlite_dependents(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _sqlite_dependents()[0]:
            schema_editor.execute(statement)


def forwards(apps, schema_editor):
    Benchmark = apps.get_model("tests_app", "Benchmark")
    Target = apps.get_model("tests_app", "Target")
    Test = apps.get_model("tests_app", "Test")
    made = {}  # (department id, fields as JSON) -> Target
    names = {}  # department id -> names taken
    for benchmark in Benchmark.objects.select_related("eval").order_by("created_at", "id"):
        department_id = benchmark.eval.department_id
        fields = _fields_of(benchmark.target)
        key = (department_id, json.dumps(fields, sort_keys=True))
        target = made.get(key)
        if target is None:
            taken = names.setdefault(department_id, set())
            target = Target.objects.create(
                department_id=department_id, name=_name_for(fields, taken), **fields
            )
            taken.add(target.name)
            made[key] = target
        benchmark.default_target = target
        benchmark.save(update_fields=["default_target"])
        Test.objects.filter(benchmark=benchmark).update(
            target=target, target_snapshot=_snapshot(target)
        )
    if schema_editor.connection.vendor == "postgresql":
        # Check the new foreign keys now: PostgreSQL refuses the ALTER TABLEs below while their
        # deferred checks are pending.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def backwards(apps, schema_editor):
    Benchmark = apps.get_model("tests_app", "Benchmark")
    for benchmark in Benchmark.objects.select_related("default_target"):
        snapshot = _snapshot(benchmark.default_target)
        config = {
            key: value
            for key, value in snapshot.items()
            if key == "kind" or (key in CLIENT_KEYS and value is not None)
        }
        benchmark.target = config
        benchmark.save(update_fields=["target"])


class Migration(migrations.Migration):
    dependencies = [
        ("tests_app", "0005_invocation_enqueued_at"),
    ]

    operations = [
        migrations.RunPython(drop_sqlite_dependents, make_sqlite_dependents),
        migrations.CreateModel(
            name="Target",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("name", models.CharField(max_length=200)),
                ("kind", models.CharField(choices=[("openai", "OpenAI-compatible chat completions server"), ("reference", "Reference (answers with the recorded replies, offline)")], default="reference", max_length=16)),
                ("model", models.CharField(blank=True, help_text="The model name the server knows (openai only).", max_length=200)),
                ("base_url", models.URLField(blank=True, help_text="e.g. http://127.0.0.1:11434/v1; empty: OPENAI_BASE_URL, else OpenAI's.", max_length=500)),
                ("api_key_env", models.CharField(blank=True, help_text="The NAME of the environment variable that holds the key, never the key.", max_length=100)),
                ("temperature", models.FloatField(default=0.0)),
                ("max_tokens", models.PositiveIntegerField(blank=True, null=True)),
                ("seed", models.BigIntegerField(blank=True, null=True)),
                ("timeout_s", models.FloatField(default=60.0, help_text="Per attempt, in seconds.")),
                ("max_retries", models.PositiveSmallIntegerField(default=2)),
                ("price_in", models.DecimalField(blank=True, decimal_places=6, help_text="Price per million input (prompt) tokens; empty: cost is not computed.", max_digits=12, null=True)),
                ("price_out", models.DecimalField(blank=True, decimal_places=6, help_text="Price per million output (completion) tokens; empty: cost is not computed.", max_digits=12, null=True)),
                ("department", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="targets", to="tests_app.department")),
            ],
            options={
                "ordering": ["name"],
                "constraints": [
                    models.UniqueConstraint(fields=("department", "name"), name="target_unique_name"),
                    models.CheckConstraint(condition=models.Q(("kind__in", ["openai", "reference"])), name="target_kind_valid"),
                ],
            },
        ),
        migrations.AddField(
            model_name="benchmark",
            name="default_target",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="benchmarks", to="tests_app.target"),
        ),
        migrations.AddField(
            model_name="test",
            name="target",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="tests", to="tests_app.target"),
        ),
        migrations.AddField(
            model_name="test",
            name="target_snapshot",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.AlterField(
            model_name="benchmark",
            name="default_target",
            field=models.ForeignKey(help_text="What start tests against when the caller names no target_id.", on_delete=django.db.models.deletion.PROTECT, related_name="benchmarks", to="tests_app.target"),
        ),
        migrations.AlterField(
            model_name="test",
            name="target",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="tests", to="tests_app.target"),
        ),
        migrations.RemoveField(
            model_name="benchmark",
            name="target",
        ),
        migrations.AddIndex(
            model_name="test",
            index=models.Index(fields=["target", "-created_at"], name="test_target_created_idx"),
        ),
        migrations.RunPython(make_sqlite_dependents, drop_sqlite_dependents),
    ]
