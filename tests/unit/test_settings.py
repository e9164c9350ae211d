"""The settings module: the embedded default, and production refusing to start half-configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "k" * 30 + "-production-secret-key-for-tests-only-0123456789"


def run_django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "REPLAYBENCH_MODE"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def shell_lines(env: dict[str, str], script: str) -> list[str]:
    """The lines a ``manage.py shell -c`` script printed, once it ran without error."""
    result = run_django(env, "shell", "-c", script)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def production_env(**overrides: str) -> dict[str, str]:
    env = {
        "REPLAYBENCH_MODE": "production",
        "SECRET_KEY": STRONG_KEY,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/replaybench",
        "REDIS_URL": "redis://127.0.0.1:6379/15",
        "ALLOWED_HOSTS": "bench.example.com",
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value}


def test_production_without_settings_names_every_missing_one() -> None:
    result = run_django({"REPLAYBENCH_MODE": "production"}, "check")
    assert result.returncode != 0
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"):
        assert name in result.stderr


def test_production_with_one_missing_names_only_that_one() -> None:
    result = run_django(production_env(REDIS_URL=""), "check")
    assert result.returncode != 0
    assert "needs these environment variables: REDIS_URL" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REDIS_URL", "localhost:6379", "REDIS_URL must look like"),
        ("DATABASE_URL", "sqlite:///tmp.db", "DATABASE_URL must be a postgres:// URL"),
        ("SECRET_KEY", "short", "SECRET_KEY must be at least 50 characters"),
        ("DEBUG", "perhaps", "DEBUG must be a boolean"),
        ("TARGET_MAX_CONCURRENCY", "many", "TARGET_MAX_CONCURRENCY must be an integer"),
    ],
)
def test_malformed_production_setting_is_named(name: str, value: str, message: str) -> None:
    result = run_django(production_env(**{name: value}), "check")
    assert result.returncode != 0
    assert message in result.stderr


def test_check_deploy_is_clean_in_production() -> None:
    result = run_django(production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_the_embedded_secret_key() -> None:
    from config.settings import EMBEDDED_SECRET_KEY

    for key in (EMBEDDED_SECRET_KEY, "django-insecure-" + "x" * 60):
        result = run_django(production_env(SECRET_KEY=key), "check")
        assert result.returncode != 0
        assert "SECRET_KEY is the embedded demo key" in result.stderr
        assert key not in result.stderr  # the message never repeats a key


def test_check_deploy_flags_the_embedded_secret_key() -> None:
    result = run_django({}, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


def test_embedded_default_needs_no_environment() -> None:
    script = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.BACKGROUND_BACKEND, "
        "s.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    assert shell_lines({}, script)[-1].split() == [
        "django.db.backends.sqlite3",
        "thread",
        "tests_app.realtime.layers.ThreadSafeInMemoryChannelLayer",
    ]


def test_debug_is_off_unless_asked_for() -> None:
    script = "from django.conf import settings as s; print(s.DEBUG)"
    for env, expected in (({}, "False"), ({"DEBUG": "1"}, "True"), ({"DEBUG": "0"}, "False")):
        assert shell_lines(env, script)[-1] == expected, env


def test_production_pools_connections_and_the_pool_size_is_a_setting() -> None:
    script = (
        "from django.conf import settings as s; d = s.DATABASES['default']; "
        "print(d['OPTIONS']['pool']['max_size'])"
    )
    assert shell_lines(production_env(DATABASE_POOL_MAX="7"), script)[-1] == "7"


def test_the_webs_pool_checks_its_connections_and_a_workers_does_not() -> None:
    # A worker retries every database operation on a fresh connection; the web cannot retry a
    # call, so its pool checks each connection it hands out.
    script = (
        "from celery.signals import worker_init; from django.db import connections; "
        "import config.celery; checks = lambda: connections['default'].settings_dict; "
        "print(checks()['CONN_HEALTH_CHECKS']); worker_init.send(sender=None); "
        "print(checks()['CONN_HEALTH_CHECKS'])"
    )
    assert shell_lines(production_env(), script)[-2:] == ["True", "False"]


def test_the_model_clients_http_log_stays_out_of_the_info_log() -> None:
    # A line per model call would be most of a busy worker's log.
    script = "import logging; print(logging.getLogger('httpx').getEffectiveLevel())"
    assert shell_lines(production_env(LOG_LEVEL="INFO"), script)[-1] == "30"


def test_celery_uses_kombus_own_redis_transport() -> None:
    script = "from config.celery import app; print(app.conf.broker_transport)"
    assert shell_lines(production_env(), script)[-1] == "None"


def test_scipy_loads_with_the_first_statistic_not_with_the_web() -> None:
    # Most web processes and every worker never compute a statistic, and scipy is heavy to load.
    script = (
        "import sys, config.urls, config.asgi, tests_app.tasks; "
        "print('scipy' in sys.modules); from tests_app import figures; "
        "print(figures.pass_rate_interval(3, 4) is not None, 'scipy' in sys.modules)"
    )
    assert shell_lines(production_env(), script)[-2:] == ["False", "True True"]
