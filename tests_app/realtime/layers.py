"""The embedded runtime's channel layer: Channels' in-memory one, made safe to publish into from
another thread (production uses channels-redis as it is).

Channels' ``InMemoryChannelLayer`` keeps asyncio queues, which belong to one event loop and are
not thread-safe. In the embedded runtime a replay runs on a background thread of the server
process and its events are sent from the process's sending loop (tests_app.realtime.events): the
message lands in the queue, but the server's loop is not woken, so the socket would see it only
when something else happens to wake that loop (seconds later, or never on an idle server).
Here every operation that touches queues or groups runs on the loop that serves the consumers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from channels.layers import InMemoryChannelLayer


class ThreadSafeInMemoryChannelLayer(InMemoryChannelLayer):
    # The loop the consumers receive on; a consumer starts receiving as soon as it is created.
    home_loop: asyncio.AbstractEventLoop | None = None

    async def _at_home(self, operation: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        home = self.home_loop
        if home is None or home is asyncio.get_running_loop() or not home.is_running():
            return await operation(*args)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(operation(*args), home))

    async def receive(self, channel: str) -> Any:
        self.home_loop = asyncio.get_running_loop()
        return await super().receive(channel)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._at_home(super().send, channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._at_home(super().group_send, group, message)

    async def group_add(self, group: str, channel: str) -> None:
        await self._at_home(super().group_add, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self._at_home(super().group_discard, group, channel)
