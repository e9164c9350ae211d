"""The channels-redis layer with fewer round trips per group send, on a real Redis.

Its messages must be what channels-redis's own layer stores and receives: daphne's consumers
receive on process-local channels (``specific.<id>!<id>``), other processes on plain ones, and a
worker on one class must reach a server on the other.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import channels_redis.core
import pytest
import redis

from tests.integration.conftest import redis_url
from tests_app.realtime.layers import RedisChannelLayer

pytestmark = pytest.mark.integration

EVENT = {"type": "test.event", "event": {"type": "run.step", "seq": 7}}


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own, its keys removed afterwards."""
    name = f"layer-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url())
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)
    client.close()


def run(scenario: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(), 10)

    return asyncio.run(bounded())


def new_layers(
    prefix: str, **options: Any
) -> tuple[RedisChannelLayer, channels_redis.core.RedisChannelLayer]:
    """Ours (the sender) and channels-redis's own (the receiving server), on one Redis."""
    hosts = [redis_url()]
    return (
        RedisChannelLayer(hosts=hosts, prefix=prefix, **options),
        channels_redis.core.RedisChannelLayer(hosts=hosts, prefix=prefix, **options),
    )


async def close(*layers: channels_redis.core.RedisChannelLayer) -> None:
    for layer in layers:
        await layer.close_pools()


async def next_message(
    layer: channels_redis.core.RedisChannelLayer, channel: str
) -> dict[str, Any]:
    return dict(await layer.receive(channel))


def count_commands(layer: RedisChannelLayer) -> list[tuple[Any, ...]]:
    """The commands ``layer`` sends on its first connection from now on, recorded as sent."""
    calls: list[tuple[Any, ...]] = []
    connection = layer.connection(0)
    original = connection.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        calls.append(args)
        return await original(*args, **options)

    connection.execute_command = counting  # type: ignore[method-assign]
    return calls


def test_every_member_gets_the_message_and_no_one_else(prefix: str) -> None:
    ours, theirs = new_layers(prefix)

    async def scenario() -> list[dict[str, Any]]:
        first, second = await theirs.new_channel(), await theirs.new_channel()
        plain = f"plain-{uuid.uuid4().hex}"
        outsider = await theirs.new_channel()
        for channel in (first, second, plain):
            await theirs.group_add("test-1", channel)
        await theirs.group_add("test-2", outsider)
        await ours.group_send("test-1", EVENT)
        received = [await next_message(theirs, channel) for channel in (first, second, plain)]
        # The outsider's first message is the one sent to it after the group send.
        await theirs.send(outsider, {"type": "marker"})
        received.append(await next_message(theirs, outsider))
        await close(ours, theirs)
        return received

    received = run(scenario)
    assert received == [EVENT, EVENT, EVENT, {"type": "marker"}]


def test_a_group_nobody_listens_to_costs_one_call_and_stores_nothing(prefix: str) -> None:
    ours, _ = new_layers(prefix)

    async def scenario() -> tuple[list[bytes], list[tuple[Any, ...]]]:
        calls = count_commands(ours)
        await ours.group_send("test-empty", EVENT)
        keys = list(await redis.asyncio.Redis.from_url(redis_url()).keys(f"{prefix}*"))
        await close(ours)
        return keys, calls

    keys, calls = run(scenario)
    assert keys == []
    assert [call[0] for call in calls] == ["EVAL"]


def test_members_past_the_group_expiry_are_dropped_and_get_nothing(prefix: str) -> None:
    ours, theirs = new_layers(prefix, group_expiry=60)

    async def scenario() -> tuple[str, list[bytes], dict[str, Any]]:
        fresh, stale = await theirs.new_channel(), await theirs.new_channel()
        await theirs.group_add("test-1", fresh)
        # Joined two minutes ago and never refreshed (its consumer died without leaving).
        client = redis.asyncio.Redis.from_url(redis_url())
        await client.zadd(theirs._group_key("test-1"), {stale: time.time() - 120})
        await ours.group_send("test-1", EVENT)
        members = await client.zrange(theirs._group_key("test-1"), 0, -1)
        received = await next_message(theirs, fresh)
        await theirs.send(stale, {"type": "marker"})
        assert await next_message(theirs, stale) == {"type": "marker"}
        await client.aclose()
        await close(ours, theirs)
        return fresh, members, received

    fresh, members, received = run(scenario)
    assert members == [fresh.encode()]
    assert received == EVENT


def test_a_full_channel_is_skipped_and_said_once_its_expired_messages_are_gone(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    ours, theirs = new_layers(prefix, capacity=1, expiry=60)

    async def scenario() -> list[dict[str, Any]]:
        channel = f"plain-{uuid.uuid4().hex}"
        await theirs.group_add("test-1", channel)
        client = redis.asyncio.Redis.from_url(redis_url())
        # A message that expired unread fills the channel; the send drops it first.
        await client.zadd(f"{prefix}{channel}", {b"expired": time.time() - 120})
        await ours.group_send("test-1", {"type": "test.event", "event": {"seq": 1}})
        await ours.group_send("test-1", {"type": "test.event", "event": {"seq": 2}})  # full
        stored = await client.zcard(f"{prefix}{channel}")
        assert stored == 1
        received = [await next_message(theirs, channel)]
        await ours.group_send("test-1", {"type": "test.event", "event": {"seq": 3}})
        received.append(await next_message(theirs, channel))
        await client.aclose()
        await close(ours, theirs)
        return received

    with caplog.at_level(logging.INFO, logger="tests_app.realtime.layers"):
        received = run(scenario)
    assert [message["event"]["seq"] for message in received] == [1, 3]
    assert "1 of 1 channels over capacity in group test-1" in caplog.text


def test_messages_sent_together_arrive_in_their_order_at_every_member(prefix: str) -> None:
    ours, theirs = new_layers(prefix)
    messages = [{"type": "test.event", "event": {"seq": seq}} for seq in (1, 2, 3)]

    async def scenario() -> list[list[dict[str, Any]]]:
        first = await theirs.new_channel()
        plain = f"plain-{uuid.uuid4().hex}"
        for channel in (first, plain):
            await theirs.group_add("test-1", channel)
        await ours.group_send_many("test-1", messages)
        received = [
            [await next_message(theirs, channel) for _ in messages] for channel in (first, plain)
        ]
        await close(ours, theirs)
        return received

    assert run(scenario) == [messages, messages]


def test_messages_sent_together_to_a_group_nobody_listens_to_cost_one_call(prefix: str) -> None:
    ours, _ = new_layers(prefix)

    async def scenario() -> list[tuple[Any, ...]]:
        calls = count_commands(ours)
        await ours.group_send_many("test-empty", [EVENT, EVENT, EVENT])
        await close(ours)
        return calls

    assert [call[0] for call in run(scenario)] == ["EVAL"]
