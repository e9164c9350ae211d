"""The process's event sender (tests_app.realtime.events): per test, in order, and what piles up
behind a send under way goes out together in the next one.

The layer here is a recording stand-in whose sends can be held open, so each test decides what is
under way when the next events are handed over."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

import pytest

from tests_app.realtime import events

WAIT_S = 5


class HeldLayer:
    """Records every send as (group, [messages]); a group listed in ``hold`` waits on its gate
    before its first send returns, and a group listed in ``broken`` fails its first send."""

    def __init__(
        self, *, hold: frozenset[str] = frozenset(), broken: frozenset[str] = frozenset()
    ) -> None:
        self.sent: list[tuple[str, list[dict[str, Any]]]] = []
        self.hold = set(hold)
        self.broken = set(broken)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.done = threading.Condition()

    async def group_send_many(self, group: str, messages: list[dict[str, Any]]) -> None:
        if group in self.hold:
            self.hold.discard(group)
            self.entered.set()
            while not self.gate.is_set():
                await asyncio.sleep(0.005)
        if group in self.broken:
            self.broken.discard(group)
            raise ConnectionError("Redis went away")
        with self.done:
            self.sent.append((group, list(messages)))
            self.done.notify_all()

    def wait_for(self, count: int) -> list[tuple[str, list[dict[str, Any]]]]:
        """The sends once ``count`` messages went out in all (fails after WAIT_S)."""
        with self.done:
            assert self.done.wait_for(
                lambda: sum(len(batch) for _, batch in self.sent) >= count, WAIT_S
            ), self.sent
            return list(self.sent)


class OneAtATimeLayer:
    """A layer with only ``group_send`` (channels' in-memory layer, say)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.arrived = threading.Semaphore(0)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.append((group, message))
        self.arrived.release()


def group() -> str:
    """A group of the test's own: a sender that is finishing an earlier test's sends still
    takes what is handed over for its group, with the layer it started with."""
    return events.group_name(uuid.uuid4())


def message(seq: int) -> dict[str, Any]:
    return {"type": "test.event", "event": {"seq": seq}}


@pytest.fixture
def use_layer(monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(layer: Any) -> Any:
        monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
        return layer

    return use


def test_what_piles_up_behind_a_send_goes_out_together_in_order(use_layer: Any) -> None:
    test_a = group()
    layer = use_layer(HeldLayer(hold=frozenset({test_a})))
    events._send(test_a, message(1))
    assert layer.entered.wait(WAIT_S)
    for seq in (2, 3, 4):
        events._send(test_a, message(seq))
    layer.gate.set()

    assert layer.wait_for(4) == [
        (test_a, [message(1)]),
        (test_a, [message(2), message(3), message(4)]),
    ]


def test_one_tests_send_under_way_does_not_hold_up_another_tests(use_layer: Any) -> None:
    test_a, test_b = group(), group()
    layer = use_layer(HeldLayer(hold=frozenset({test_a})))
    events._send(test_a, message(1))
    assert layer.entered.wait(WAIT_S)
    events._send(test_b, message(10))

    assert layer.wait_for(1) == [(test_b, [message(10)])]
    layer.gate.set()
    assert layer.wait_for(2)[-1] == (test_a, [message(1)])


def test_a_failed_send_is_logged_and_the_tests_later_events_still_go_out(
    use_layer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    test_a = group()
    layer = use_layer(HeldLayer(hold=frozenset({test_a}), broken=frozenset({test_a})))
    with caplog.at_level(logging.ERROR, logger="tests_app.realtime.events"):
        events._send(test_a, message(1))
        assert layer.entered.wait(WAIT_S)
        events._send(test_a, message(2))
        layer.gate.set()
        assert layer.wait_for(1) == [(test_a, [message(2)])]
    assert "Could not send 1 realtime event(s): ConnectionError('Redis went away')" in caplog.text


def test_a_layer_without_batches_gets_each_message_in_order(use_layer: Any) -> None:
    test_a = group()
    layer = use_layer(OneAtATimeLayer())
    for seq in (1, 2, 3):
        events._send(test_a, message(seq))
    for _ in range(3):
        assert layer.arrived.acquire(timeout=WAIT_S)
    assert layer.sent == [(test_a, message(seq)) for seq in (1, 2, 3)]


def test_a_test_with_nothing_left_to_send_keeps_no_entry(use_layer: Any) -> None:
    test_a = group()
    layer = use_layer(HeldLayer())
    events._send(test_a, message(1))
    layer.wait_for(1)

    async def pending() -> dict[str, Any]:
        # Read on the loop, after the sender's task finished (its send is the loop's last step).
        await asyncio.sleep(0.05)
        return dict(events._pending)

    snapshot = asyncio.run_coroutine_threadsafe(pending(), events.process_loop()).result(WAIT_S)
    assert test_a not in snapshot
