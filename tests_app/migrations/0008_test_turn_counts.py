"""Turns per (test, cycle, latency in ms) with their tokens, kept by triggers on the replay steps.

A test's latency percentiles, tokens and cost (get's status_summary, compare) summed over its
steps cost a join of every invocation with every step on each get of a running test; summed over
these rows they cost one row per distinct latency. The design is 0003's: the counts move in the
same transaction as the write that changes them, whoever makes it (the replay, bulk loads, COPY,
deletes). PostgreSQL: inserts and deletes through statement-level triggers over the transition
tables (a COPY costs one aggregated upsert, a replayed turn one small one), updates through a
row-level trigger that skips updates leaving the counted columns alone; count rows are taken in
key order. A replay writes a test's steps with the test's row locked, so two replays of one test
never wait on each other here. SQLite: row-level triggers.

``reported_turns`` counts the turns whose target reported tokens (the reference target reports
none), so that a test whose turns reported nothing says so rather than "0 tokens".
"""

from django.db import migrations, models

COUNTED = "tests_app_testturncount"


def _upsert(table):
    return f"""
        ON CONFLICT (test_id, cycle, latency_ms) DO UPDATE SET
            turns = {table}.turns + EXCLUDED.turns,
            reported_turns = {table}.reported_turns + EXCLUDED.reported_turns,
            prompt_tokens = {table}.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = {table}.completion_tokens + EXCLUDED.completion_tokens
    """


COLUMNS = "test_id, cycle, latency_ms, turns, reported_turns, prompt_tokens, completion_tokens"


def _reported(row):
    return (
        f"CASE WHEN {row}.prompt_tokens IS NULL AND {row}.completion_tokens IS NULL "
        "THEN 0 ELSE 1 END"
    )


# The net change per key of a set of steps; {rows} names them, {sign} is 1 or -1.
POSTGRES_CHANGES = f"""
    INSERT INTO {COUNTED} ({COLUMNS})
    SELECT invocation.test_id, run.cycle, step.latency_ms, {{sign}} * COUNT(*),
           {{sign}} * SUM({_reported("step")}),
           {{sign}} * COALESCE(SUM(step.prompt_tokens), 0),
           {{sign}} * COALESCE(SUM(step.completion_tokens), 0)
      FROM {{rows}} AS step
      JOIN tests_app_testinvocation AS invocation ON invocation.id = step.invocation_id
      JOIN tests_app_testrun AS run ON run.id = invocation.run_id
     GROUP BY invocation.test_id, run.cycle, step.latency_ms
     ORDER BY invocation.test_id, run.cycle, step.latency_ms
    {_upsert(COUNTED)};
"""
POSTGRES_FUNCTION = """
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {body}
        RETURN NULL;
    END
    $$
"""
POSTGRES_STATEMENT_TRIGGER = """
    CREATE TRIGGER {name} AFTER {event} ON tests_app_replaystep REFERENCING {transition}
    FOR EACH STATEMENT EXECUTE FUNCTION {name}()
"""
NAME = "tests_app_step_turn_count_"

POSTGRES_FORWARD = [
    f"ALTER TABLE {COUNTED} SET (fillfactor = 50)",
    POSTGRES_FUNCTION.format(
        name=NAME + "insert", body=POSTGRES_CHANGES.format(rows="new_rows", sign=1)
    ),
    POSTGRES_STATEMENT_TRIGGER.format(
        name=NAME + "insert", event="INSERT", transition="NEW TABLE AS new_rows"
    ),
    POSTGRES_FUNCTION.format(
        name=NAME + "delete", body=POSTGRES_CHANGES.format(rows="old_rows", sign=-1)
    ),
    POSTGRES_STATEMENT_TRIGGER.format(
        name=NAME + "delete", event="DELETE", transition="OLD TABLE AS old_rows"
    ),
    # A step moved or rewritten: the old values out, the new ones in (ordered by key).
    POSTGRES_FUNCTION.format(
        name=NAME + "update",
        body=f"""
        INSERT INTO {COUNTED} ({COLUMNS})
        SELECT invocation.test_id, run.cycle, change.latency_ms, SUM(change.sign),
               SUM(change.sign * {_reported("change")}),
               COALESCE(SUM(change.sign * change.prompt_tokens), 0),
               COALESCE(SUM(change.sign * change.completion_tokens), 0)
          FROM (VALUES
                (OLD.invocation_id, OLD.latency_ms, OLD.prompt_tokens, OLD.completion_tokens, -1),
                (NEW.invocation_id, NEW.latency_ms, NEW.prompt_tokens, NEW.completion_tokens, 1)
               ) AS change (invocation_id, latency_ms, prompt_tokens, completion_tokens, sign)
          JOIN tests_app_testinvocation AS invocation ON invocation.id = change.invocation_id
          JOIN tests_app_testrun AS run ON run.id = invocation.run_id
         -- One row per key: a change that keeps the key (the tokens only) nets out here.
         GROUP BY invocation.test_id, run.cycle, change.latency_ms
         ORDER BY invocation.test_id, run.cycle, change.latency_ms
        {_upsert(COUNTED)};
        """,
    ),
    f"""
    CREATE TRIGGER {NAME}update
    AFTER UPDATE OF invocation_id, latency_ms, prompt_tokens, completion_tokens
    ON tests_app_replaystep
    FOR EACH ROW
    WHEN (OLD.invocation_id IS DISTINCT FROM NEW.invocation_id
          OR OLD.latency_ms IS DISTINCT FROM NEW.latency_ms
          OR OLD.prompt_tokens IS DISTINCT FROM NEW.prompt_tokens
          OR OLD.completion_tokens IS DISTINCT FROM NEW.completion_tokens)
    EXECUTE FUNCTION {NAME}update()
    """,
    # The steps that exist already.
    POSTGRES_CHANGES.format(rows="tests_app_replaystep", sign=1),
]
POSTGRES_REVERSE = [
    statement
    for event in ("insert", "delete", "update")
    for statement in (
        f"DROP TRIGGER IF EXISTS {NAME}{event} ON tests_app_replaystep",
        f"DROP FUNCTION IF EXISTS {NAME}{event}()",
    )
]


def _sqlite_change(row, sign):
    return f"""
    INSERT INTO {COUNTED} ({COLUMNS})
    SELECT invocation.test_id, run.cycle, {row}.latency_ms, {sign}, {sign} * {_reported(row)},
           {sign} * COALESCE({row}.prompt_tokens, 0), {sign} * COALESCE({row}.completion_tokens, 0)
      FROM tests_app_testinvocation AS invocation
      JOIN tests_app_testrun AS run ON run.id = invocation.run_id
     WHERE invocation.id = {row}.invocation_id
    {_upsert(COUNTED)};
    """


SQLITE_FORWARD = [
    f"""
    CREATE TRIGGER {NAME}insert AFTER INSERT ON tests_app_replaystep
    FOR EACH ROW BEGIN {_sqlite_change("NEW", 1)} END
    """,
    f"""
    CREATE TRIGGER {NAME}delete AFTER DELETE ON tests_app_replaystep
    FOR EACH ROW BEGIN {_sqlite_change("OLD", -1)} END
    """,
    f"""
    CREATE TRIGGER {NAME}update
    AFTER UPDATE OF invocation_id, latency_ms, prompt_tokens, completion_tokens
    ON tests_app_replaystep
    FOR EACH ROW WHEN OLD.invocation_id IS NOT NEW.invocation_id
        OR OLD.latency_ms IS NOT NEW.latency_ms
        OR OLD.prompt_tokens IS NOT NEW.prompt_tokens
        OR OLD.completion_tokens IS NOT NEW.completion_tokens
    BEGIN {_sqlite_change("OLD", -1)} {_sqlite_change("NEW", 1)} END
    """,
    f"""
    INSERT INTO {COUNTED} ({COLUMNS})
    SELECT invocation.test_id, run.cycle, step.latency_ms, COUNT(*), SUM({_reported("step")}),
           COALESCE(SUM(step.prompt_tokens), 0), COALESCE(SUM(step.completion_tokens), 0)
      FROM tests_app_replaystep AS step
      JOIN tests_app_testinvocation AS invocation ON invocation.id = step.invocation_id
      JOIN tests_app_testrun AS run ON run.id = invocation.run_id
     GROUP BY invocation.test_id, run.cycle, step.latency_ms
    """,
]
SQLITE_REVERSE = [
    f"DROP TRIGGER IF EXISTS {NAME}{event}" for event in ("insert", "delete", "update")
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            raise NotImplementedError(
                f"No turn count triggers for {schema_editor.connection.vendor}: the figures "
                "of tests would be wrong."
            )
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("tests_app", "0007_test_day_count_targets"),
    ]

    operations = [
        migrations.CreateModel(
            name="TestTurnCount",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("test_id", models.UUIDField()),
                ("cycle", models.PositiveIntegerField()),
                ("latency_ms", models.PositiveIntegerField()),
                ("turns", models.IntegerField(default=0)),
                ("reported_turns", models.IntegerField(default=0)),
                ("prompt_tokens", models.BigIntegerField(default=0)),
                ("completion_tokens", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("test_id", "cycle", "latency_ms"), name="test_turn_count_key"
                    )
                ],
            },
        ),
        migrations.RunPython(
            _run({"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
