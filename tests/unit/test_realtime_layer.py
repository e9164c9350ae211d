"""The embedded runtime's in-memory channel layer, published into from a background thread.

The server's loop below has no timers and no I/O: nothing but the layer itself can wake it, as on
an idle daphne while a replay thread publishes its steps.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from tests import factories
from tests_app.realtime.events import group_name, send_event
from tests_app.realtime.layers import ThreadSafeInMemoryChannelLayer

WAIT_S = 5


def test_the_embedded_runtime_uses_it() -> None:
    # Under pytest the conftest swaps the layer, so ask a fresh process without REDIS_URL.
    environment = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    environment["REPLAYBENCH_MODE"] = "embedded"
    result = subprocess.run(
        [sys.executable, "-c", "from config import settings; print(settings.CHANNEL_LAYERS)"],
        cwd=Path(__file__).resolve().parents[2],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "tests_app.realtime.layers.ThreadSafeInMemoryChannelLayer" in result.stdout


def test_a_message_from_another_thread_wakes_the_waiting_receiver() -> None:
    layer = ThreadSafeInMemoryChannelLayer()
    group = group_name("3f1c2a9e-0000-4000-8000-000000000001")
    loop = asyncio.new_event_loop()
    waiting = threading.Event()
    received: list[dict[str, Any]] = []
    arrived = threading.Event()

    async def consumer() -> None:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        receiving = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)  # the receive is now blocked on its queue
        waiting.set()
        received.append(await receiving)
        arrived.set()

    server = threading.Thread(target=loop.run_until_complete, args=(consumer(),), daemon=True)
    server.start()
    try:
        assert waiting.wait(WAIT_S)
        # What send_event does on a replay thread: async_to_sync, i.e. a loop of its own.
        async_to_sync(layer.group_send)(group, {"type": "test.event", "event": {"seq": 1}})
        assert arrived.wait(WAIT_S), "the server's loop was never woken"
        assert received == [{"type": "test.event", "event": {"seq": 1}}]
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        server.join(WAIT_S)
        loop.close()


def test_on_its_own_loop_it_behaves_like_the_plain_layer() -> None:
    layer = ThreadSafeInMemoryChannelLayer()

    async def scenario() -> list[Any]:
        first, second = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("g", first)
        await layer.group_add("g", second)
        await layer.group_discard("g", second)
        await layer.group_send("g", {"type": "a"})
        await layer.send(second, {"type": "b"})
        return [await layer.receive(first), await layer.receive(second)]

    assert asyncio.run(scenario()) == [{"type": "a"}, {"type": "b"}]


@pytest.mark.django_db
def test_send_event_from_a_replay_thread_wakes_the_embedded_server(settings: Any) -> None:
    # The embedded runtime: events go through the process's sender loop, then to the loop that
    # serves the consumers, which nothing else wakes.
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "tests_app.realtime.layers.ThreadSafeInMemoryChannelLayer"}
    }
    layer = get_channel_layer()
    assert isinstance(layer, ThreadSafeInMemoryChannelLayer)
    test = factories.TestFactory.create()
    loop = asyncio.new_event_loop()
    waiting = threading.Event()
    received: list[dict[str, Any]] = []
    arrived = threading.Event()

    async def consumer() -> None:
        channel = await layer.new_channel()
        await layer.group_add(group_name(test.pk), channel)
        receiving = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)
        waiting.set()
        received.append(await receiving)
        arrived.set()

    server = threading.Thread(target=loop.run_until_complete, args=(consumer(),), daemon=True)
    server.start()
    try:
        assert waiting.wait(WAIT_S)
        send_event(test_id=test.pk, event_type="run.step", turn=1, output="Answer 1.")
        assert arrived.wait(WAIT_S), "the server's loop was never woken"
        [message] = received
        assert message["type"] == "test.event"
        assert message["event"]["type"] == "run.step"
        assert message["event"]["seq"] == test.event_seq + 1
        assert message["event"]["output"] == "Answer 1."
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        server.join(WAIT_S)
        loop.close()
