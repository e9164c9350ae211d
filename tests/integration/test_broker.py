"""The broker transport (tests_app.broker) on a real Redis: kombu's Redis transport, one client.

Messages go out and come back as kombu's own transport stores them, an acknowledgement clears
the unacked index that ``acks_late`` relies on, and many publishes share one redis client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_redis

from tests.integration.conftest import redis_url
from tests_app import broker

pytestmark = pytest.mark.integration


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"broker-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url())
    client.delete(name, "unacked", "unacked_index")
    client.close()


def connect() -> Any:
    return Connection(redis_url(), transport="tests_app.broker:Transport")


def test_messages_go_out_and_come_back_in_order_and_the_ack_clears_them(queue_name: str) -> None:
    queue = Queue(queue_name, Exchange(queue_name, type="direct"), routing_key=queue_name)
    with connect() as connection:
        assert isinstance(connection.default_channel, broker.Channel)
        with connection.Producer() as producer:
            for number in range(3):
                producer.publish(
                    {"number": number},
                    exchange=queue.exchange,
                    routing_key=queue_name,
                    declare=[queue],
                )
        received: list[Any] = []
        simple = connection.SimpleQueue(queue)
        client = redis.Redis.from_url(redis_url())
        for _ in range(3):
            message = simple.get(timeout=5)
            received.append(message.payload)
            unacked = client.hexists("unacked", message.delivery_tag)
            assert unacked, "a delivered message waits in the unacked index until its ack"
            message.ack()
            assert not client.hexists("unacked", message.delivery_tag)
        client.close()
        simple.close()
    assert received == [{"number": 0}, {"number": 1}, {"number": 2}]


@pytest.fixture
def clients_made(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every redis client kombu's channel (ours included) makes, as its ``asynchronous`` flag."""
    made: list[bool] = []
    original = kombu_redis.Channel._create_client

    def counting(self: Any, asynchronous: bool = False) -> Any:
        made.append(asynchronous)
        return original(self, asynchronous)

    monkeypatch.setattr(kombu_redis.Channel, "_create_client", counting)
    return made


def test_many_publishes_make_one_client(queue_name: str, clients_made: list[bool]) -> None:
    with connect() as connection, connection.Producer() as producer:
        for number in range(20):
            producer.publish({"number": number}, routing_key=queue_name)
        clients = {id(connection.default_channel._create_client()) for _ in range(5)}
    assert clients_made.count(False) == 1
    assert len(clients) == 1
    client = redis.Redis.from_url(redis_url())
    assert client.llen(queue_name) == 20
    client.close()


def test_kombus_own_channel_makes_a_client_per_publish(
    queue_name: str, clients_made: list[bool]
) -> None:
    """What the transport is for: the same publishes on kombu's channel, counted alike."""
    with Connection(redis_url()) as connection, connection.Producer() as producer:
        for number in range(20):
            producer.publish({"number": number}, routing_key=queue_name)
    assert clients_made.count(False) >= 20
