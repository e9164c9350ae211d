"""The Celery application. Settings come from Django's settings (CELERY_* names).

Start workers (I/O-bound replays: a thread pool sized for concurrent model calls, and a process
per core) and one beat (docs/deployment.md):

    celery -A config worker --pool=threads --concurrency=32 -n w1@%h --loglevel=INFO
    celery -A config beat --loglevel=INFO    # the sweep of stranded work, the analytics refresh
"""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("replaybench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _retry_rather_than_check(**_: Any) -> None:
    """A worker retries every database operation on a fresh connection after a connection error
    (tests_app.outages, the tasks' autoretry), so its pool does not check each connection it
    hands out: a replay takes one for every turn. The web cannot retry a call, and checks."""
    from django.db import connections

    connections["default"].settings_dict["CONN_HEALTH_CHECKS"] = False
