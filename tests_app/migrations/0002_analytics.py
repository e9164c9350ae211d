"""Analytics views and the trigram indexes of search.

PostgreSQL: materialized views refreshed concurrently by ``tests_app.services.refresh`` (each has
the unique index that REFRESH ... CONCURRENTLY needs), pg_trgm, and GIN trigram indexes on the
eval and department names. Django's ``icontains`` compiles to ``UPPER(name::text) LIKE UPPER(%s)``,
so the indexes are on that expression.

SQLite (the embedded runtime): plain views of the same names and columns, always current.
"""

from django.db import migrations

# Per eval and day of creation: tests started, runs, graded runs, passed runs, mean score.
EVAL_DAILY_SELECT = """
    SELECT t.eval_id AS eval_id,
           t.department_id AS department_id,
           {day} AS day,
           COUNT(*) AS tests,
           SUM(t.total_runs) AS runs,
           SUM(t.completed_runs) AS completed,
           SUM(t.graded_runs) AS graded,
           SUM(t.passed_runs) AS passed,
           SUM(t.score_sum) / NULLIF(SUM(t.graded_runs), 0) AS mean_score
      FROM tests_app_test t
     GROUP BY t.eval_id, t.department_id, {day}
"""

DEPARTMENT_SELECT = """
    SELECT t.department_id AS department_id,
           COUNT(*) AS tests,
           SUM(CASE WHEN t.is_archived THEN 0 ELSE 1 END) AS active_tests,
           SUM(t.total_runs) AS runs,
           SUM(t.completed_runs) AS completed,
           SUM(t.graded_runs) AS graded,
           SUM(t.passed_runs) AS passed,
           SUM(t.score_sum) / NULLIF(SUM(t.graded_runs), 0) AS mean_score,
           MAX(t.created_at) AS last_test_at
      FROM tests_app_test t
     GROUP BY t.department_id
"""

POSTGRES_FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    'CREATE INDEX IF NOT EXISTS eval_name_trgm_idx ON tests_app_eval '
    'USING gin ((UPPER("name"::text)) gin_trgm_ops)',
    'CREATE INDEX IF NOT EXISTS department_name_trgm_idx ON tests_app_department '
    'USING gin ((UPPER("name"::text)) gin_trgm_ops)',
    "CREATE MATERIALIZED VIEW analytics_eval_daily AS "
    + EVAL_DAILY_SELECT.format(day="(t.created_at AT TIME ZONE 'UTC')::date"),
    "CREATE UNIQUE INDEX analytics_eval_daily_key ON analytics_eval_daily (eval_id, department_id, day)",
    "CREATE INDEX analytics_eval_daily_day ON analytics_eval_daily (day)",
    "CREATE MATERIALIZED VIEW analytics_department AS " + DEPARTMENT_SELECT,
    "CREATE UNIQUE INDEX analytics_department_key ON analytics_department (department_id)",
]
POSTGRES_REVERSE = [
    "DROP MATERIALIZED VIEW IF EXISTS analytics_department",
    "DROP MATERIALIZED VIEW IF EXISTS analytics_eval_daily",
    "DROP INDEX IF EXISTS department_name_trgm_idx",
    "DROP INDEX IF EXISTS eval_name_trgm_idx",
]

SQLITE_FORWARD = [
    "CREATE VIEW analytics_eval_daily AS " + EVAL_DAILY_SELECT.format(day="date(t.created_at)"),
    "CREATE VIEW analytics_department AS " + DEPARTMENT_SELECT,
]
SQLITE_REVERSE = [
    "DROP VIEW IF EXISTS analytics_department",
    "DROP VIEW IF EXISTS analytics_eval_daily",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            return  # another backend: no analytics views; refresh reports none
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("tests_app", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
