"""The read-only progress socket of one test: ``ws/tests/<test_id>/`` (DESIGN §5).

The handshake is accepted and then, for a refused caller, closed with a code that says why
(browsers cannot read the HTTP status of a refused handshake, but they do see close codes):

* 4401: no credentials, or an API key that is unknown/revoked/expired, or a session that ended;
* 4404: no such test, or not visible to the caller (as in the API, ids do not leak).

An accepted socket first receives a ``snapshot`` (see :mod:`tests_app.realtime.snapshot`), then
the test's events with strictly increasing ``seq``. Events that were already covered by the
snapshot, or that overtake a later one on their way from another process, are dropped: the client
sees the gap in ``seq`` and re-fetches with get, which is always right because every event's data
is committed before the event is sent. Messages from the client are ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase

from tests_app.errors import NotFound
from tests_app.models import ApiKey, Test
from tests_app.realtime.events import group_name
from tests_app.realtime.snapshot import build_snapshot
from tests_app.selectors.scope import can_see_department, get_visible_test

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


def _visible_test_department(*, user: Any, test_id: str) -> uuid.UUID | None:
    try:
        test = get_visible_test(
            user=user, test_id=test_id, queryset=Test.objects.only("department")
        )
    except NotFound:
        return None
    return test.department_id


def _close_code_now(
    *,
    user_id: int,
    department_id: uuid.UUID,
    api_key_id: Any,
    session: SessionBase | None,
) -> int | None:
    """Whether the caller may still watch, from fresh rows (no per-user membership cache)."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return CLOSE_UNAUTHENTICATED
    if api_key_id is not None:
        api_key = ApiKey.objects.filter(pk=api_key_id, revoked=False).first()
        if api_key is None or api_key.has_expired:
            return CLOSE_UNAUTHENTICATED
    elif session is not None and session.session_key and not session.exists(session.session_key):
        return CLOSE_UNAUTHENTICATED  # logged out elsewhere: the session row is gone
    if not can_see_department(user, department_id):
        return CLOSE_NOT_FOUND
    return None


class TestEventsConsumer(AsyncJsonWebsocketConsumer):
    __test__ = False  # not a pytest test class

    # Permissions are checked again before an event is forwarded, at most this often: a replay
    # step may come every few milliseconds, and a revoked membership may take this long to bite.
    permission_recheck_seconds: float = 5.0

    group: str | None = None
    department_id: uuid.UUID | None = None
    last_seq: int = 0
    checked_at: float = 0.0

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        test_id = str(self.scope["url_route"]["kwargs"]["test_id"])
        try:
            uuid.UUID(test_id)
        except ValueError:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.department_id = await database_sync_to_async(_visible_test_department)(
            user=user, test_id=test_id
        )
        if self.department_id is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        # Join before reading the snapshot: an event sent in between is queued for us and then
        # either covered by the snapshot (dropped by seq) or newer (forwarded).
        self.group = group_name(test_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await database_sync_to_async(build_snapshot)(test_id=test_id)
        self.last_seq = int(snapshot["seq"])
        self.checked_at = time.monotonic()
        await self.send_json(snapshot)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Read-only: whatever the client sends is ignored (not even parsed)."""

    async def test_event(self, message: dict[str, Any]) -> None:
        """A ``test.event`` from the group (see :func:`tests_app.realtime.events.send_event`)."""
        if self.group is None or self.department_id is None:
            return
        event = message.get("event") or {}
        seq = int(event.get("seq") or 0)
        if seq <= self.last_seq:
            return
        if time.monotonic() - self.checked_at >= self.permission_recheck_seconds:
            close_code = await database_sync_to_async(_close_code_now)(
                user_id=self.scope["user"].pk,
                department_id=self.department_id,
                api_key_id=self.scope.get("api_key_id"),
                session=None if self.scope.get("api_key_id") else self.scope.get("session"),
            )
            if close_code is not None:
                await self.disconnect(close_code)
                await self.close(code=close_code)
                return
            self.checked_at = time.monotonic()
        self.last_seq = seq
        await self.send_json(event)
