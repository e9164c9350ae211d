"""The Celery application. Settings come from Django's settings (CELERY_* names).

Start workers (I/O-bound replays: a thread pool sized for concurrent model calls, and a process
per core) and one beat (docs/deployment.md):

    celery -A config worker --pool=threads --concurrency=32 -n w1@%h --loglevel=INFO
    celery -A config beat --loglevel=INFO    # the sweep of stranded work, the analytics refresh
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("replaybench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
