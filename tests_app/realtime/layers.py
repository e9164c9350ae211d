"""The channel layers: the embedded runtime's in-memory one, made safe to publish into from a
thread, and channels-redis's with fewer round trips per group send (:class:`RedisChannelLayer`).

Channels' ``InMemoryChannelLayer`` keeps asyncio queues, which belong to one event loop and are
not thread-safe. In the embedded runtime a replay runs on a background thread of the server
process and publishes from the publishing thread's own event loop (tests_app.realtime.events): the
message lands in the queue, but the server's loop is not woken, so the socket would see it only
when something else happens to wake that loop (seconds later, or never on an idle server).
Here every operation that touches queues or groups runs on the loop that serves the consumers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import channels_redis.core
from channels.layers import InMemoryChannelLayer

logger = logging.getLogger(__name__)


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


# Drop the group's members that outlived the group expiry and read the rest: one round trip
# where channels-redis takes two (a ZREMRANGEBYSCORE, then a ZRANGE).
_GROUP_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# channels-redis's send script with its trim of expired messages folded in (it sends that as a
# pipeline first): per channel key, drop messages older than the expiry, then add the message
# unless the channel is at capacity. ARGV: the messages, the capacities, now, expiry, cutoff.
_GROUP_SEND = """
local over_capacity = 0
local current_time = ARGV[#ARGV - 2]
local expiry = ARGV[#ARGV - 1]
local cutoff = ARGV[#ARGV]
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
    redis.call('ZADD', KEYS[i], current_time, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
  else
    over_capacity = over_capacity + 1
  end
end
return over_capacity
"""


class RedisChannelLayer(channels_redis.core.RedisChannelLayer):
    """channels-redis's layer with ``group_send`` in fewer Redis round trips: one for a group
    nobody listens to (the usual case for an agent's replays), two per Redis host when someone
    does, instead of two and four. A replay sends five events, and every round trip is a system
    call on each side. Same keys, messages and expiry rules, so processes on either class share
    one Redis (channels-redis 4.3 is pinned; its tests of this are ours).

    :meth:`group_send_many` sends several messages to a group in order, reading its members
    once: the events a process's sender has queued for a test meanwhile."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.group_send_many(group, [message])

    async def group_send_many(self, group: str, messages: list[dict[str, Any]]) -> None:
        self.require_valid_group_name(group)  # raises TypeError on a bad name
        connection = self.connection(self.consistent_hash(group))
        members = await connection.eval(
            _GROUP_MEMBERS, 1, self._group_key(group), int(time.time()) - self.group_expiry
        )
        channel_names = [member.decode("utf8") for member in members]
        # One message after the other: each is added to the channels' sorted sets at its own
        # time, which is the order a consumer receives them in.
        for message in messages if channel_names else []:
            await self._send_to_members(group, channel_names, message)

    async def _send_to_members(
        self, group: str, channel_names: list[str], message: dict[str, Any]
    ) -> None:
        keys_by_connection, message_by_key, capacity_by_key = self._map_channel_keys_to_connection(
            channel_names, message
        )
        for index, keys in keys_by_connection.items():
            now = time.time()
            over_capacity = await self.connection(index).eval(
                _GROUP_SEND,
                len(keys),
                *keys,
                *(message_by_key[key] for key in keys),
                *(capacity_by_key[key] for key in keys),
                now,
                self.expiry,
                int(now) - int(self.expiry),
            )
            if over_capacity > 0:
                logger.info(
                    "%s of %s channels over capacity in group %s",
                    over_capacity,
                    len(channel_names),
                    group,
                )
