"""The process's event sender (tests_app.realtime.events): per test, in order; one test's slow
send does not hold up another test's; a failed send is logged and the later ones still go out.

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
    """Records every send as (group, message); a group listed in ``hold`` waits on its gate
    before its first send returns, and a group listed in ``broken`` fails its first send."""

    def __init__(
        self, *, hold: frozenset[str] = frozenset(), broken: frozenset[str] = frozenset()
    ) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.hold = set(hold)
        self.broken = set(broken)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.done = threading.Condition()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if group in self.hold:
            self.hold.discard(group)
            self.entered.set()
            while not self.gate.is_set():
                await asyncio.sleep(0.005)
        if group in self.broken:
            self.broken.discard(group)
            raise ConnectionError("Redis went away")
        with self.done:
            self.sent.append((group, message))
            self.done.notify_all()

    def wait_for(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        """The sends once ``count`` messages went out in all (fails after WAIT_S)."""
        with self.done:
            assert self.done.wait_for(lambda: len(self.sent) >= count, WAIT_S), self.sent
            return list(self.sent)


def group() -> str:
    return events.group_name(uuid.uuid4())


def message(seq: int) -> dict[str, Any]:
    return {"type": "test.event", "event": {"seq": seq}}


@pytest.fixture
def use_layer(monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(layer: Any) -> Any:
        monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
        return layer

    return use


def test_a_tests_events_go_out_in_the_order_they_were_handed_over(use_layer: Any) -> None:
    layer = use_layer(HeldLayer())
    one = group()
    for seq in range(1, 21):
        events._sender().send(one, message(seq))

    sent = layer.wait_for(20)

    assert [item["event"]["seq"] for _, item in sent] == list(range(1, 21))


def test_one_tests_send_under_way_does_not_hold_up_another_tests(use_layer: Any) -> None:
    slow, quick = group(), group()
    layer = use_layer(HeldLayer(hold=frozenset({slow})))
    events._sender().send(slow, message(1))
    assert layer.entered.wait(WAIT_S)
    events._sender().send(quick, message(1))
    events._sender().send(slow, message(2))

    assert layer.wait_for(1) == [(quick, message(1))]
    layer.gate.set()
    sent = layer.wait_for(3)
    assert [item for name, item in sent if name == slow] == [message(1), message(2)]


def test_a_failed_send_is_logged_and_the_tests_later_events_still_go_out(
    use_layer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broken = group()
    layer = use_layer(HeldLayer(broken=frozenset({broken})))
    with caplog.at_level(logging.ERROR, logger="tests_app.realtime.events"):
        events._sender().send(broken, message(1))
        events._sender().send(broken, message(2))
        assert layer.wait_for(1) == [(broken, message(2))]
    assert "Could not send a realtime event" in caplog.text


def test_a_test_with_nothing_left_to_send_keeps_no_queue(use_layer: Any) -> None:
    layer = use_layer(HeldLayer())
    done = group()
    events._sender().send(done, message(1))
    layer.wait_for(1)

    async def queues() -> dict[str, Any]:
        return dict(events._sender()._queues)

    sender = events._sender()
    remaining = asyncio.run_coroutine_threadsafe(queues(), sender.loop).result(WAIT_S)
    assert done not in remaining
