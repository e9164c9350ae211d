"""Search's day counts gain the target: tests per (eval, department, target, archived flag, UTC
day), so the target facet and the target filter are summed from the same rows as the others.

The triggers of 0003 are replaced by the same triggers over five key columns instead of four, and
the counts are counted again from the tests. The design is 0003's: PostgreSQL inserts and deletes
through statement-level triggers over the transition tables (a bulk insert costs one aggregated
upsert), updates through a row-level trigger whose WHEN clause skips every update that leaves the
key columns alone; count rows are taken in key order. SQLite: row-level triggers.
"""

import uuid

from django.db import migrations, models

KEY = ("eval_id", "department_id", "target_id", "is_archived")
KEYS = ", ".join(KEY)
# The conflict target lists the unique constraint's columns (in any order).
CONFLICT = f"({KEYS}, day)"

POSTGRES_UPSERT = f"""
    INSERT INTO tests_app_testdaycount ({KEYS}, day, count)
    SELECT {KEYS}, day, SUM(delta) FROM ({{changes}}) AS changes
     GROUP BY {KEYS}, day
    HAVING SUM(delta) <> 0
     ORDER BY day, {KEYS}
        ON CONFLICT {CONFLICT}
        DO UPDATE SET count = tests_app_testdaycount.count + EXCLUDED.count;
"""
POSTGRES_ROWS = f"""
    SELECT {KEYS}, (created_at AT TIME ZONE 'UTC')::date AS day, {{delta}} AS delta
      FROM {{rows}}
"""
POSTGRES_FUNCTION = """
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {upsert}
        RETURN NULL;
    END
    $$
"""
POSTGRES_TRIGGER = """
    CREATE TRIGGER {name} AFTER {event} ON tests_app_test REFERENCING {transition_tables}
    FOR EACH STATEMENT EXECUTE FUNCTION {name}()
"""


def _postgres_trigger(event, transition_tables, rows, delta):
    name = "tests_app_test_day_count_" + event.lower()
    upsert = POSTGRES_UPSERT.format(changes=POSTGRES_ROWS.format(rows=rows, delta=delta))
    return [
        POSTGRES_FUNCTION.format(name=name, upsert=upsert),
        POSTGRES_TRIGGER.format(name=name, event=event, transition_tables=transition_tables),
    ]


def _row(prefix, delta):
    values = ", ".join(f"{prefix}.{column}" for column in KEY)
    return f"({values}, ({prefix}.created_at AT TIME ZONE 'UTC')::date, {delta})"


def _changed(old, new):
    return " OR ".join(
        [f"{old}.{column} IS DISTINCT FROM {new}.{column}" for column in KEY]
        + [
            f"({old}.created_at AT TIME ZONE 'UTC')::date "
            f"IS DISTINCT FROM ({new}.created_at AT TIME ZONE 'UTC')::date"
        ]
    )


POSTGRES_DROP = [
    statement
    for event in ("insert", "delete", "update")
    for statement in (
        "DROP TRIGGER IF EXISTS tests_app_test_day_count_" + event + " ON tests_app_test",
        "DROP FUNCTION IF EXISTS tests_app_test_day_count_" + event + "()",
    )
]
POSTGRES_CREATE = [
    *_postgres_trigger("INSERT", "NEW TABLE AS new_rows", "new_rows", 1),
    *_postgres_trigger("DELETE", "OLD TABLE AS old_rows", "old_rows", -1),
    f"""
    CREATE FUNCTION tests_app_test_day_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO tests_app_testdaycount ({KEYS}, day, count)
        SELECT * FROM (VALUES {_row("OLD", -1)}, {_row("NEW", 1)})
            AS changes ({KEYS}, day, delta)
         ORDER BY day, {KEYS}
            ON CONFLICT {CONFLICT}
            DO UPDATE SET count = tests_app_testdaycount.count + EXCLUDED.count;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE TRIGGER tests_app_test_day_count_update
    AFTER UPDATE OF {KEYS}, created_at ON tests_app_test
    FOR EACH ROW WHEN ({_changed("OLD", "NEW")})
    EXECUTE FUNCTION tests_app_test_day_count_update()
    """,
]
POSTGRES_COUNT = POSTGRES_UPSERT.format(
    changes=POSTGRES_ROWS.format(rows="tests_app_test", delta=1)
)

# SQLite stores date-times as UTC text, so date() is the UTC day.
SQLITE_UPSERT = """
    INSERT INTO tests_app_testdaycount ({keys}, day, count)
    VALUES ({values}, date({row}.created_at), {delta})
        ON CONFLICT {conflict}
        DO UPDATE SET count = count + ({delta});
"""


def _sqlite_upsert(row, delta):
    values = ", ".join(f"{row}.{column}" for column in KEY)
    return SQLITE_UPSERT.format(
        keys=KEYS, values=values, row=row, delta=delta, conflict=CONFLICT
    )


SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS tests_app_test_day_count_" + event
    for event in ("insert", "delete", "update")
]
SQLITE_CHANGED = " OR ".join(
    [f"OLD.{column} IS NOT NEW.{column}" for column in KEY]
    + ["date(OLD.created_at) IS NOT date(NEW.created_at)"]
)
SQLITE_CREATE = [
    f"""
    CREATE TRIGGER tests_app_test_day_count_insert AFTER INSERT ON tests_app_test
    FOR EACH ROW BEGIN {_sqlite_upsert("NEW", 1)} END
    """,
    f"""
    CREATE TRIGGER tests_app_test_day_count_delete AFTER DELETE ON tests_app_test
    FOR EACH ROW BEGIN {_sqlite_upsert("OLD", -1)} END
    """,
    f"""
    CREATE TRIGGER tests_app_test_day_count_update
    AFTER UPDATE OF {KEYS}, created_at ON tests_app_test
    FOR EACH ROW WHEN {SQLITE_CHANGED}
    BEGIN {_sqlite_upsert("OLD", -1)} {_sqlite_upsert("NEW", 1)} END
    """,
]
SQLITE_COUNT = f"""
    INSERT INTO tests_app_testdaycount ({KEYS}, day, count)
    SELECT {KEYS}, date(created_at), COUNT(*)
      FROM tests_app_test
     GROUP BY {KEYS}, date(created_at)
"""


def _old_triggers(vendor):
    """0003's triggers, to put back when going backwards."""
    import importlib

    day_counts = importlib.import_module("tests_app.migrations.0003_test_day_counts")
    forward = {"postgresql": day_counts.POSTGRES_FORWARD, "sqlite": day_counts.SQLITE_FORWARD}
    # Without the fillfactor setting and the first count (the last statement): the rows are
    # counted again below.
    return [
        statement
        for statement in forward[vendor][:-1]
        if not statement.strip().startswith("ALTER TABLE")
    ]


def _unsupported(vendor):
    return NotImplementedError(
        f"No test day count triggers for {vendor}: search's counts would be wrong."
    )


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": POSTGRES_DROP, "sqlite": SQLITE_DROP}.get(vendor)
    if statements is None:
        raise _unsupported(vendor)
    for statement in statements:
        schema_editor.execute(statement)
    schema_editor.execute("DELETE FROM tests_app_testdaycount")


def make_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {
        "postgresql": [*POSTGRES_CREATE, POSTGRES_COUNT],
        "sqlite": [*SQLITE_CREATE, SQLITE_COUNT],
    }.get(vendor)
    if statements is None:
        raise _unsupported(vendor)
    for statement in statements:
        schema_editor.execute(statement)


def make_old_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in _old_triggers(vendor):
        schema_editor.execute(statement)
    old_count = {
        "postgresql": """
            INSERT INTO tests_app_testdaycount (eval_id, department_id, is_archived, day, count)
            SELECT eval_id, department_id, is_archived, (created_at AT TIME ZONE 'UTC')::date,
                   COUNT(*)
              FROM tests_app_test
             GROUP BY 1, 2, 3, 4
        """,
        "sqlite": """
            INSERT INTO tests_app_testdaycount (eval_id, department_id, is_archived, day, count)
            SELECT eval_id, department_id, is_archived, date(created_at), COUNT(*)
              FROM tests_app_test
             GROUP BY 1, 2, 3, 4
        """,
    }
    schema_editor.execute(old_count[vendor])


class Migration(migrations.Migration):
    dependencies = [
        ("tests_app", "0006_targets"),
    ]

    operations = [
        # Backwards, the old triggers and counts come back once the old key is in place.
        migrations.RunPython(drop_triggers, make_old_triggers),
        migrations.RemoveConstraint(model_name="testdaycount", name="test_day_count_key"),
        migrations.AddField(
            model_name="testdaycount",
            name="target_id",
            # The table is empty here: the default only fills the column's definition.
            field=models.UUIDField(default=uuid.UUID(int=0)),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name="testdaycount",
            constraint=models.UniqueConstraint(
                fields=("day", "eval_id", "department_id", "target_id", "is_archived"),
                name="test_day_count_target_key",
            ),
        ),
        migrations.RunPython(make_triggers, drop_triggers),
    ]
