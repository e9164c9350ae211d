"""The progress socket through the full ASGI application (origin check, auth, routing, consumer).

Each test is a sync test that runs one async scenario with ``async_to_sync``: the consumer's
database calls come back to the test's thread, where ``transactional_db`` has committed the rows.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection, transaction
from django.test import Client

from config.asgi import application
from tests import factories
from tests_app.models import Membership, TestInvocation, TestRun
from tests_app.realtime.consumers import TestEventsConsumer
from tests_app.realtime.events import (
    EventType,
    group_name,
    next_seq,
    publish_on_commit,
    send_event,
)
from tests_app.realtime.snapshot import build_snapshot

pytestmark = pytest.mark.usefixtures("transactional_db")

ORIGIN = (b"origin", b"http://testserver")
WAIT = 3  # seconds to wait for something that should happen


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async_to_sync(scenario)()


def socket(
    test_id: Any, *headers: tuple[bytes, bytes], host: bytes = b"testserver"
) -> WebsocketCommunicator:
    # Browsers and websocket clients always send Host, as HTTP/1.1 requires.
    return WebsocketCommunicator(
        application, f"/ws/tests/{test_id}/", headers=[(b"host", host), *headers]
    )


def key_header(user: Any) -> tuple[bytes, bytes]:
    _, key = factories.make_api_key(user)
    return (b"x-api-key", key.encode())


def session_cookie(user: Any) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode())


async def close_code(communicator: WebsocketCommunicator) -> int:
    """Connect and return the code the server closes with (the socket must not get data first)."""
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected
    output = await communicator.receive_output(timeout=WAIT)
    assert output["type"] == "websocket.close", output
    return int(output["code"])


async def publish(test: Any, event_type: EventType, **data: Any) -> None:
    await sync_to_async(send_event)(test_id=test.pk, event_type=event_type, **data)


@pytest.fixture
def research_test(benchmark: Any, operator: Any) -> Any:
    """A running Research test: two runs, the first claimed with an invocation."""
    test = factories.TestFactory.create(benchmark=benchmark, status="running", total_runs=2)
    entries = list(benchmark.entries.all())
    run_1 = factories.TestRunFactory.create(
        test=test, entry=entries[0], ordinal=1, status="claimed"
    )
    factories.TestRunFactory.create(test=test, entry=entries[1], ordinal=2)
    invocation = factories.TestInvocationFactory.create(run=run_1, actor=operator)
    test.current_invocation = invocation
    test.save(update_fields=["current_invocation"])
    return test


def test_anonymous_is_refused_with_4401(research_test: Any) -> None:
    async def scenario() -> None:
        communicator = socket(research_test.pk, ORIGIN)
        assert await close_code(communicator) == 4401
        await communicator.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    "header_name", [b"x-api-key", b"authorization"], ids=["x-api-key", "bearer"]
)
def test_unknown_key_is_refused_even_with_a_valid_session(
    research_test: Any, viewer: Any, header_name: bytes
) -> None:
    # As in the REST API the key is checked first; a bad key never falls back to the cookie.
    value = b"abcd1234.not-the-secret"
    if header_name == b"authorization":
        value = b"Bearer " + value
    cookie = session_cookie(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, ORIGIN, cookie, (header_name, value))
        assert await close_code(communicator) == 4401
        await communicator.disconnect()

    run(scenario)


def test_outsider_is_refused_as_not_found(research_test: Any, outsider: Any) -> None:
    header = key_header(outsider)

    async def scenario() -> None:
        communicator = socket(research_test.pk, ORIGIN, header)
        assert await close_code(communicator) == 4404
        await communicator.disconnect()

    run(scenario)


@pytest.mark.parametrize("test_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_unknown_or_malformed_test_id_is_not_found(viewer: Any, test_id: str) -> None:
    header = key_header(viewer)

    async def scenario() -> None:
        communicator = socket(test_id, ORIGIN, header)
        assert await close_code(communicator) == 4404
        await communicator.disconnect()

    run(scenario)


def test_foreign_origin_is_refused_at_the_handshake(research_test: Any, viewer: Any) -> None:
    cookie = session_cookie(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, (b"origin", b"http://evil.example"), cookie)
        connected, _ = await communicator.connect(timeout=WAIT)
        assert not connected
        await communicator.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    "origin",
    [
        b"http://localhost:9999",
        b"http://127.0.0.1:1",
        b"https://127.0.0.1",
        b"https://127.0.0.1:8000",
        b"http://127.0.0.1",
        b"http://127.0.0.1:8000.evil.example",
        b"null",
        b"ws://127.0.0.1:8000",
    ],
)
def test_an_origin_differing_in_scheme_host_or_port_is_refused(
    research_test: Any, viewer: Any, origin: bytes
) -> None:
    cookie = session_cookie(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, (b"origin", origin), cookie, host=b"127.0.0.1:8000")
        connected, _ = await communicator.connect(timeout=WAIT)
        assert not connected
        await communicator.disconnect()

    run(scenario)


async def snapshot_type(communicator: WebsocketCommunicator) -> str:
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected
    message = await communicator.receive_json_from(timeout=WAIT)
    await communicator.disconnect()
    return str(message["type"])


def test_the_pages_own_origin_and_trusted_origins_are_accepted(
    research_test: Any, viewer: Any, settings: Any
) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://bench.example.com", "https://*.corp.example"]
    cookie = session_cookie(viewer)

    async def scenario() -> None:
        for origin, host in [
            (b"http://127.0.0.1:8000", b"127.0.0.1:8000"),
            (b"http://localhost", b"localhost"),
            (b"https://bench.example.com", b"127.0.0.1:8000"),
            (b"https://bench.example.com:443", b"127.0.0.1:8000"),
            (b"https://eu.corp.example", b"127.0.0.1:8000"),
        ]:
            communicator = socket(research_test.pk, (b"origin", origin), cookie, host=host)
            assert await snapshot_type(communicator) == "snapshot", origin

    run(scenario)


def test_an_origin_matching_a_host_outside_allowed_hosts_is_refused(
    research_test: Any, viewer: Any
) -> None:
    # DNS rebinding: evil.example resolves to this server; the page and its socket agree, but
    # evil.example is no host of ours.
    cookie = session_cookie(viewer)

    async def scenario() -> None:
        communicator = socket(
            research_test.pk,
            (b"origin", b"http://evil.example:8000"),
            cookie,
            host=b"evil.example:8000",
        )
        connected, _ = await communicator.connect(timeout=WAIT)
        assert not connected
        await communicator.disconnect()

    run(scenario)


def test_behind_a_tls_proxy_the_https_origin_is_the_sockets_own(
    research_test: Any, viewer: Any, settings: Any
) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["bench.example.com"]
    cookie = session_cookie(viewer)

    async def scenario() -> None:
        https_page = socket(
            research_test.pk,
            (b"origin", b"https://bench.example.com"),
            (b"x-forwarded-proto", b"https"),
            cookie,
            host=b"bench.example.com",
        )
        assert await snapshot_type(https_page) == "snapshot"
        http_page = socket(
            research_test.pk,
            (b"origin", b"http://bench.example.com"),
            (b"x-forwarded-proto", b"https"),
            cookie,
            host=b"bench.example.com",
        )
        connected, _ = await http_page.connect(timeout=WAIT)
        assert not connected
        await http_page.disconnect()

    run(scenario)


def test_session_cookie_without_origin_is_not_trusted(research_test: Any, viewer: Any) -> None:
    # No Origin means "not a browser": such a client must use a key, its cookies are ignored.
    cookie = session_cookie(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, cookie)
        assert await close_code(communicator) == 4401
        await communicator.disconnect()

    run(scenario)


def test_viewer_with_api_key_gets_the_snapshot_first(
    research_test: Any, viewer: Any, operator: Any
) -> None:
    header = key_header(viewer)
    research_test.event_seq = 7
    research_test.save(update_fields=["event_seq"])
    invocation = TestInvocation.objects.get(test=research_test)

    async def scenario() -> None:
        # No Origin header: a plain agent client authenticated by its key is accepted.
        communicator = socket(research_test.pk, header)
        connected, _ = await communicator.connect(timeout=WAIT)
        assert connected
        snapshot = await communicator.receive_json_from(timeout=WAIT)
        await communicator.disconnect()

        assert snapshot["type"] == "snapshot"
        assert snapshot["seq"] == 7
        assert snapshot["test_id"] == str(research_test.pk)
        assert snapshot["status"] == "running"
        summary = snapshot["status_summary"]
        assert summary["total_runs"] == 2
        assert summary["by_status"] == {
            "pending": 1,
            "claimed": 1,
            "running": 0,
            "completed": 0,
            "failed": 0,
            "stopped": 0,
        }
        assert summary["progress"] == 0.0
        assert summary["pass_rate"] is None
        current = snapshot["current_invocation"]
        assert current["id"] == str(invocation.pk)
        assert current["run_id"] == str(invocation.run_id)
        assert current["run_ordinal"] == 1
        assert current["status"] == "created"

    run(scenario)


def test_viewer_with_bearer_header_is_accepted(research_test: Any, viewer: Any) -> None:
    _, key = factories.make_api_key(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, (b"authorization", f"Bearer {key}".encode()))
        connected, _ = await communicator.connect(timeout=WAIT)
        assert connected
        snapshot = await communicator.receive_json_from(timeout=WAIT)
        await communicator.disconnect()
        assert snapshot["type"] == "snapshot"
        assert snapshot["test_id"] == str(research_test.pk)

    run(scenario)


def test_viewer_with_browser_session_is_accepted(research_test: Any, viewer: Any) -> None:
    cookie = session_cookie(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, ORIGIN, cookie)
        connected, _ = await communicator.connect(timeout=WAIT)
        assert connected
        snapshot = await communicator.receive_json_from(timeout=WAIT)
        await communicator.disconnect()
        assert snapshot["type"] == "snapshot"
        assert snapshot["status_summary"]["total_runs"] == 2

    run(scenario)


def test_staff_may_watch_any_department(research_test: Any, staff: Any) -> None:
    header = key_header(staff)

    async def scenario() -> None:
        communicator = socket(research_test.pk, header)
        await communicator.connect(timeout=WAIT)
        snapshot = await communicator.receive_json_from(timeout=WAIT)
        await communicator.disconnect()
        assert snapshot["type"] == "snapshot"

    run(scenario)


def test_events_arrive_in_order_with_increasing_seq(research_test: Any, viewer: Any) -> None:
    header = key_header(viewer)
    invocation = TestInvocation.objects.get(test=research_test)

    async def scenario() -> None:
        communicator = socket(research_test.pk, header)
        await communicator.connect(timeout=WAIT)
        snapshot = await communicator.receive_json_from(timeout=WAIT)
        ids = {"invocation_id": invocation.pk, "run_id": invocation.run_id}
        await publish(research_test, "run.started", **ids)
        for turn in (1, 2, 3):
            await publish(
                research_test, "run.step", turn=turn, total_turns=3, output=f"Answer {turn}.", **ids
            )
        await publish(research_test, "run.completed", **ids)
        events = [await communicator.receive_json_from(timeout=WAIT) for _ in range(5)]
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()

        assert [event["type"] for event in events] == [
            "run.started",
            "run.step",
            "run.step",
            "run.step",
            "run.completed",
        ]
        assert [event["seq"] for event in events] == [
            snapshot["seq"] + offset for offset in range(1, 6)
        ]
        assert [event["turn"] for event in events[1:4]] == [1, 2, 3]
        assert events[2]["output"] == "Answer 2."
        assert events[2]["total_turns"] == 3
        for event in events:
            assert event["test_id"] == str(research_test.pk)
            assert event["invocation_id"] == str(invocation.pk)
            assert event["run_id"] == str(invocation.run_id)

    run(scenario)


def test_the_seq_is_stored_on_the_test(research_test: Any, viewer: Any) -> None:
    # A reconnecting client's snapshot continues where the events left off.
    header = key_header(viewer)

    async def scenario() -> None:
        first = socket(research_test.pk, header)
        await first.connect(timeout=WAIT)
        await first.receive_json_from(timeout=WAIT)
        await publish(research_test, "test.stopped", status="stopped")
        event = await first.receive_json_from(timeout=WAIT)
        await first.disconnect()

        second = socket(research_test.pk, header)
        await second.connect(timeout=WAIT)
        snapshot = await second.receive_json_from(timeout=WAIT)
        await second.disconnect()
        assert event["status"] == "stopped"
        assert snapshot["seq"] == event["seq"]

    run(scenario)


def test_stale_or_overtaken_events_are_dropped(research_test: Any, viewer: Any) -> None:
    # Events from two processes can reach the group out of order; the socket never goes back.
    header = key_header(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, header)
        await communicator.connect(timeout=WAIT)
        snapshot = await communicator.receive_json_from(timeout=WAIT)
        layer = get_channel_layer()
        group = group_name(research_test.pk)

        async def raw(seq: int, kind: str) -> None:
            event = {"type": kind, "seq": seq, "test_id": str(research_test.pk)}
            await layer.group_send(group, {"type": "test.event", "event": event})

        base = snapshot["seq"]
        await raw(base, "run.started")  # already covered by the snapshot
        await raw(base + 2, "run.step")
        await raw(base + 1, "run.started")  # overtaken
        await raw(base + 3, "run.completed")
        received = [await communicator.receive_json_from(timeout=WAIT) for _ in range(2)]
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()
        assert [(event["seq"], event["type"]) for event in received] == [
            (base + 2, "run.step"),
            (base + 3, "run.completed"),
        ]

    run(scenario)


def test_client_messages_are_ignored(research_test: Any, viewer: Any) -> None:
    header = key_header(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, header)
        await communicator.connect(timeout=WAIT)
        await communicator.receive_json_from(timeout=WAIT)
        await communicator.send_to(text_data="not json at all {")
        await communicator.send_json_to({"type": "run.completed", "seq": 999})
        assert await communicator.receive_nothing(timeout=0.2)
        await publish(research_test, "test.completed", status="completed")
        event = await communicator.receive_json_from(timeout=WAIT)
        await communicator.disconnect()
        assert event["type"] == "test.completed"

    run(scenario)


def test_removed_membership_stops_the_events(
    research_test: Any, viewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TestEventsConsumer, "permission_recheck_seconds", 0.0)
    header = key_header(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, header)
        await communicator.connect(timeout=WAIT)
        await communicator.receive_json_from(timeout=WAIT)
        await publish(research_test, "run.started")
        assert (await communicator.receive_json_from(timeout=WAIT))["type"] == "run.started"

        await sync_to_async(Membership.objects.filter(user=viewer).delete)()
        await publish(research_test, "run.step", turn=1, total_turns=3, output="secret")
        output = await communicator.receive_output(timeout=WAIT)
        await communicator.disconnect()
        assert output == {"type": "websocket.close", "code": 4404}

    run(scenario)


def test_revoked_key_stops_the_events(
    research_test: Any, viewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TestEventsConsumer, "permission_recheck_seconds", 0.0)
    api_key, key = factories.make_api_key(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, (b"x-api-key", key.encode()))
        await communicator.connect(timeout=WAIT)
        await communicator.receive_json_from(timeout=WAIT)
        api_key.revoked = True
        await sync_to_async(api_key.save)(update_fields=["revoked"])
        await publish(research_test, "run.started")
        output = await communicator.receive_output(timeout=WAIT)
        await communicator.disconnect()
        assert output == {"type": "websocket.close", "code": 4401}

    run(scenario)


def test_logged_out_session_stops_the_events(
    research_test: Any, viewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TestEventsConsumer, "permission_recheck_seconds", 0.0)
    client = Client()
    client.force_login(viewer)
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode())

    async def scenario() -> None:
        communicator = socket(research_test.pk, ORIGIN, cookie)
        await communicator.connect(timeout=WAIT)
        await communicator.receive_json_from(timeout=WAIT)
        await sync_to_async(client.logout)()
        await publish(research_test, "run.started")
        output = await communicator.receive_output(timeout=WAIT)
        await communicator.disconnect()
        assert output == {"type": "websocket.close", "code": 4401}

    run(scenario)


def test_publish_on_commit_waits_for_the_commit(research_test: Any, viewer: Any) -> None:
    header = key_header(viewer)

    async def scenario() -> None:
        communicator = socket(research_test.pk, header)
        await communicator.connect(timeout=WAIT)
        snapshot = await communicator.receive_json_from(timeout=WAIT)

        def change_and_publish() -> bool:
            with transaction.atomic():
                TestRun.objects.filter(test=research_test, ordinal=2).update(status="claimed")
                publish_on_commit(test_id=research_test.pk, event_type="run.started")
                # While the transaction is open nothing may reach the socket.
                return bool(async_to_sync(communicator.receive_nothing)(timeout=0.3))

        nothing_before_commit = await sync_to_async(change_and_publish)()
        event = await communicator.receive_json_from(timeout=WAIT)
        await communicator.disconnect()
        assert nothing_before_commit
        assert event["type"] == "run.started"
        assert event["seq"] == snapshot["seq"] + 1

    run(scenario)


def test_snapshot_summarizes_grades_and_the_current_cycle(benchmark: Any) -> None:
    test = factories.TestFactory.create(
        benchmark=benchmark, infinite_mode=True, cycle=2, event_seq=4
    )
    entry = benchmark.entries.first()
    factories.TestRunFactory.create(test=test, entry=entry, cycle=1, ordinal=1, status="completed")
    done = [
        factories.TestRunFactory.create(
            test=test, entry=entry, cycle=2, ordinal=ordinal, status="completed", **grade
        )
        for ordinal, grade in (
            (1, {"score": 0.9, "passed": True}),
            (2, {"score": 0.3, "passed": False}),
        )
    ]
    factories.TestRunFactory.create(test=test, entry=entry, cycle=2, ordinal=3, status="failed")
    factories.TestRunFactory.create(test=test, entry=entry, cycle=2, ordinal=4, status="running")
    running = factories.TestInvocationFactory.create(run=done[0], status="ended")
    running = factories.TestInvocationFactory.create(
        run=TestRun.objects.get(test=test, cycle=2, ordinal=4), status="running", steps_count=2
    )

    snapshot = build_snapshot(test_id=test.pk)

    assert snapshot["seq"] == 4
    summary = snapshot["status_summary"]
    assert summary["cycle"] == 2
    assert summary["total_runs"] == 4  # the cycle-1 run is not counted
    assert summary["by_status"]["completed"] == 2
    assert summary["by_status"]["failed"] == 1
    assert summary["by_status"]["running"] == 1
    assert (summary["graded"], summary["passed"], summary["not_passed"]) == (2, 1, 1)
    assert summary["pass_rate"] == pytest.approx(0.5)
    assert summary["mean_score"] == pytest.approx(0.6)
    assert summary["progress"] == pytest.approx(0.75)
    assert snapshot["current_invocation"]["id"] == str(running.pk)
    assert snapshot["current_invocation"]["steps_count"] == 2
    assert snapshot["current_invocation"]["run_ordinal"] == 4
    json.dumps(snapshot)  # it goes over the wire as is


def test_seq_from_many_threads_is_unique_and_increasing(research_test: Any) -> None:
    # Every worker thread takes its number with one UPDATE ... RETURNING in its own transaction.
    start = research_test.event_seq
    taken: dict[int, list[int]] = {}

    def take(index: int) -> None:
        try:
            taken[index] = [next_seq(research_test.pk) for _ in range(20)]
        finally:
            connection.close()

    threads = [threading.Thread(target=take, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(seq for seqs in taken.values() for seq in seqs) == list(
        range(start + 1, start + 161)
    )
    assert all(seqs == sorted(seqs) for seqs in taken.values())
    research_test.refresh_from_db()
    assert research_test.event_seq == start + 160


def test_sends_from_many_threads_share_one_loop_and_keep_each_threads_order(
    research_test: Any,
) -> None:
    layer = get_channel_layer()
    start = research_test.event_seq

    def publish_three(index: int) -> None:
        try:
            for turn in (1, 2, 3):
                send_event(test_id=research_test.pk, event_type="run.step", turn=turn, sender=index)
        finally:
            connection.close()

    def from_threads() -> None:
        threads = [threading.Thread(target=publish_three, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    async def scenario() -> list[dict[str, Any]]:
        channel = await layer.new_channel()
        await layer.group_add(group_name(research_test.pk), channel)
        await sync_to_async(from_threads)()
        return [(await layer.receive(channel))["event"] for _ in range(12)]

    events = async_to_sync(scenario)()

    assert sorted(event["seq"] for event in events) == list(range(start + 1, start + 13))
    for index in range(4):
        mine = [event for event in events if event["sender"] == index]
        assert [event["turn"] for event in mine] == [1, 2, 3]
        assert [event["seq"] for event in mine] == sorted(event["seq"] for event in mine)
    loops = [thread for thread in threading.enumerate() if thread.name == "realtime-events"]
    assert len(loops) == 1
