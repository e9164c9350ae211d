"""The heartbeat of the replays a worker process runs (DESIGN §6).

One thread per process keeps ``heartbeat_at`` of the invocations it replays fresh, and the leases
of the target slots their model calls hold, while a call with retries may outlast the sweep's
timeout. The thread dies with the process, so a killed worker's invocations go stale (the sweep
gives their runs back) and its slots expire.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils import timezone

from tests_app.models import TestInvocation
from tests_app.targets.concurrency import Lease

logger = logging.getLogger(__name__)


@dataclass
class Beat:
    """One replay that the process's heartbeat keeps alive, and the lease of the target slot
    its model call holds at the moment (None between calls)."""

    invocation_id: uuid.UUID
    lease: Lease | None = None


class Heartbeats:
    """The replays of this process and the thread that keeps them alive."""

    def __init__(self) -> None:
        self._beats: dict[uuid.UUID, Beat] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = 0
        # How long the thread sleeps at the moment: a replay wakes it only when the timeout has
        # been shortened since (a woken thread would refresh every replay of the process at once).
        self._sleeping_s = 0.0

    @contextlib.contextmanager
    def beating(self, invocation_id: uuid.UUID) -> Iterator[Beat]:
        beat = Beat(invocation_id)
        with self._lock:
            if self._pid != os.getpid():  # first use here, or a forked child: start the thread
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="heartbeats", daemon=True).start()
            self._beats[invocation_id] = beat
            if _interval() < self._sleeping_s:
                self._wake.set()
        try:
            yield beat
        finally:
            with self._lock:
                self._beats.pop(invocation_id, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._sleeping_s = _interval()
            self._wake.wait(self._sleeping_s)
            self._wake.clear()
            with self._lock:
                beats = list(self._beats.values())
            if not beats:
                continue
            try:
                TestInvocation.objects.filter(
                    pk__in=[beat.invocation_id for beat in beats],
                    status=TestInvocation.Status.RUNNING,
                ).update(heartbeat_at=timezone.now())
                for beat in beats:
                    if beat.lease is not None:
                        beat.lease.renew()
            except Exception:
                logger.exception("The heartbeat of %s replays failed", len(beats))
            finally:
                connection.close()


def _interval() -> float:
    return max(0.2, settings.REPLAY_HEARTBEAT_TIMEOUT / 4)


heartbeats = Heartbeats()
