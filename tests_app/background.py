"""Hand work to the background after the current transaction commits.

Backends (settings.BACKGROUND_BACKEND):
* ``celery``: the task goes to Celery workers on Redis (production, integration tests).
* ``thread``: the embedded default; the task runs in this process on a small thread pool, so the
  request that enqueued it still returns at once.
* ``sync``: the task runs in the on-commit callback itself (unit and API tests, where the test's
  own transaction decides what is visible).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _thread_pool() -> ThreadPoolExecutor:
    # Per process, created lazily; only the embedded runtime uses it (no broker exists there).
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.BACKGROUND_THREADS, thread_name_prefix="replaybench-bg"
            )
        return _executor


def _run_in_thread(task: Any, args: tuple[Any, ...]) -> None:
    close_old_connections()
    try:
        task.apply(args=args, throw=False)
    except Exception:
        logger.exception("Background task %s failed", task.name)
    finally:
        connection.close()


def _dispatch(task: Any, args: tuple[Any, ...]) -> None:
    backend = settings.BACKGROUND_BACKEND
    if backend == "celery":
        try:
            task.apply_async(args=args)
        except (KombuOperationalError, RedisError) as error:
            # The work is committed and says it waits for a worker: the sweep enqueues it again
            # (tests_app.services.sweep), so a broker outage delays it and loses nothing.
            logger.warning("Could not enqueue %s%s, left to the sweep: %r", task.name, args, error)
    elif backend == "thread":
        _thread_pool().submit(_run_in_thread, task, args)
    else:
        task.apply(args=args, throw=True)


def enqueue_on_commit(task: Any, *args: Any) -> None:
    """Run ``task(*args)`` in the background once the surrounding transaction has committed."""
    transaction.on_commit(partial(_dispatch, task, tuple(str(a) for a in args)))


def sweep_in_this_process(sweep_task: Any) -> threading.Thread:
    """The embedded runtime has no beat: its server process runs the sweep of stranded work
    (``sweep_task``) itself, every REAPER_INTERVAL_S, on a daemon thread, so a replay left
    running or unstarted by a server that was stopped is given back after a restart."""
    thread = threading.Thread(
        target=_sweep_forever, args=(sweep_task,), name="replaybench-sweep", daemon=True
    )
    thread.start()
    return thread


def _sweep_forever(sweep_task: Any) -> None:
    while True:
        time.sleep(settings.REAPER_INTERVAL_S)
        try:
            sweep_task.apply(throw=True)
        except Exception:
            logger.exception("The sweep of stranded work failed; trying again later")
        finally:
            connection.close()
