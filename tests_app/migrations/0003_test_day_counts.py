"""Tests per (eval, department, archived flag, UTC day), kept by triggers, for search's counts.

Search's exact total and facets summed over the tests table cost a full scan at a million tests;
summed over these rows they cost at most evals x days x 2 rows, with only the partial first and
last day of a date range counted on the tests table (``tests_app.selectors.search``).

The triggers move the counts in the same transaction as the write that changes them, whoever
makes it: the start and archive services, the admin, deletes, bulk loads and COPY. PostgreSQL:
inserts and deletes through statement-level triggers over the transition tables, so a bulk insert
costs one aggregated upsert; updates through a row-level trigger whose WHEN clause skips every
update that leaves the four columns alone (counters and event numbers move on every claim and
turn, and must not pay for this). Count rows are always taken in key order. SQLite: row-level
triggers.
"""

from django.db import migrations, models

# The net change per key in one upsert, in key order; {changes} gives (key, delta) rows.
POSTGRES_UPSERT = """
    INSERT INTO tests_app_testdaycount (eval_id, department_id, is_archived, day, count)
    SELECT eval_id, department_id, is_archived, day, SUM(delta) FROM ({changes}) AS changes
     GROUP BY eval_id, department_id, is_archived, day
    HAVING SUM(delta) <> 0
     ORDER BY day, eval_id, department_id, is_archived
        ON CONFLICT (eval_id, department_id, is_archived, day)
        DO UPDATE SET count = tests_app_testdaycount.count + EXCLUDED.count;
"""
POSTGRES_ROWS = """
    SELECT eval_id, department_id, is_archived, (created_at AT TIME ZONE 'UTC')::date AS day,
           {delta} AS delta
      FROM {rows}
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


def _postgres_trigger(event: str, transition_tables: str, changes: str) -> list[str]:
    name = "tests_app_test_day_count_" + event.lower()
    upsert = POSTGRES_UPSERT.format(changes=changes)
    return [
        POSTGRES_FUNCTION.format(name=name, upsert=upsert),
        POSTGRES_TRIGGER.format(name=name, event=event, transition_tables=transition_tables),
    ]


POSTGRES_FORWARD = [
    # Every start moves one of these rows: room in each page lets the update stay on its page
    # (count is in no index), and the dead versions are pruned there, so bulk loads and busy days
    # do not bloat a table that search reads whole.
    "ALTER TABLE tests_app_testdaycount SET (fillfactor = 50)",
    *_postgres_trigger(
        "INSERT", "NEW TABLE AS new_rows", POSTGRES_ROWS.format(rows="new_rows", delta=1)
    ),
    *_postgres_trigger(
        "DELETE", "OLD TABLE AS old_rows", POSTGRES_ROWS.format(rows="old_rows", delta=-1)
    ),
    """
    CREATE FUNCTION tests_app_test_day_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO tests_app_testdaycount (eval_id, department_id, is_archived, day, count)
        SELECT * FROM (VALUES
            (OLD.eval_id, OLD.department_id, OLD.is_archived,
             (OLD.created_at AT TIME ZONE 'UTC')::date, -1),
            (NEW.eval_id, NEW.department_id, NEW.is_archived,
             (NEW.created_at AT TIME ZONE 'UTC')::date, 1)
        ) AS changes (eval_id, department_id, is_archived, day, delta)
         ORDER BY day, eval_id, department_id, is_archived
            ON CONFLICT (eval_id, department_id, is_archived, day)
            DO UPDATE SET count = tests_app_testdaycount.count + EXCLUDED.count;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER tests_app_test_day_count_update
    AFTER UPDATE OF eval_id, department_id, is_archived, created_at ON tests_app_test
    FOR EACH ROW
    WHEN (OLD.eval_id IS DISTINCT FROM NEW.eval_id
          OR OLD.department_id IS DISTINCT FROM NEW.department_id
          OR OLD.is_archived IS DISTINCT FROM NEW.is_archived
          OR (OLD.created_at AT TIME ZONE 'UTC')::date
             IS DISTINCT FROM (NEW.created_at AT TIME ZONE 'UTC')::date)
    EXECUTE FUNCTION tests_app_test_day_count_update()
    """,
    # The tests that exist already.
    POSTGRES_UPSERT.format(changes=POSTGRES_ROWS.format(rows="tests_app_test", delta=1)),
]
POSTGRES_REVERSE = [
    statement
    for event in ("insert", "delete", "update")
    for statement in (
        "DROP TRIGGER IF EXISTS tests_app_test_day_count_" + event + " ON tests_app_test",
        "DROP FUNCTION IF EXISTS tests_app_test_day_count_" + event + "()",
    )
]

# SQLite stores date-times as UTC text, so date() is the UTC day.
SQLITE_UPSERT = """
    INSERT INTO tests_app_testdaycount (eval_id, department_id, is_archived, day, count)
    VALUES ({row}.eval_id, {row}.department_id, {row}.is_archived, date({row}.created_at),
            {delta})
        ON CONFLICT (eval_id, department_id, is_archived, day)
        DO UPDATE SET count = count + ({delta});
"""
SQLITE_FORWARD = [
    """
    CREATE TRIGGER tests_app_test_day_count_insert AFTER INSERT ON tests_app_test
    FOR EACH ROW BEGIN {insert} END
    """.format(insert=SQLITE_UPSERT.format(row="NEW", delta=1)),
    """
    CREATE TRIGGER tests_app_test_day_count_delete AFTER DELETE ON tests_app_test
    FOR EACH ROW BEGIN {delete} END
    """.format(delete=SQLITE_UPSERT.format(row="OLD", delta=-1)),
    """
    CREATE TRIGGER tests_app_test_day_count_update
    AFTER UPDATE OF eval_id, department_id, is_archived, created_at ON tests_app_test
    FOR EACH ROW WHEN OLD.eval_id IS NOT NEW.eval_id
        OR OLD.department_id IS NOT NEW.department_id
        OR OLD.is_archived IS NOT NEW.is_archived
        OR date(OLD.created_at) IS NOT date(NEW.created_at)
    BEGIN {delete} {insert} END
    """.format(
        delete=SQLITE_UPSERT.format(row="OLD", delta=-1),
        insert=SQLITE_UPSERT.format(row="NEW", delta=1),
    ),
    """
    INSERT INTO tests_app_testdaycount (eval_id, department_id, is_archived, day, count)
    SELECT eval_id, department_id, is_archived, date(created_at), COUNT(*)
      FROM tests_app_test
     GROUP BY eval_id, department_id, is_archived, date(created_at)
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS tests_app_test_day_count_" + event
    for event in ("insert", "delete", "update")
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            raise NotImplementedError(
                f"No test day count triggers for {schema_editor.connection.vendor}: search's "
                "counts would be wrong."
            )
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("tests_app", "0002_analytics"),
    ]

    operations = [
        migrations.CreateModel(
            name="TestDayCount",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("eval_id", models.UUIDField()),
                ("department_id", models.UUIDField()),
                ("is_archived", models.BooleanField()),
                ("day", models.DateField()),
                ("count", models.IntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "eval_id", "department_id", "is_archived"),
                        name="test_day_count_key",
                    )
                ],
            },
        ),
        migrations.RunPython(
            _run({"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
