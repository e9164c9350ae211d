"""kombu's Redis transport, with one redis client per connection pool instead of one per call.

kombu's Redis channel makes a new ``redis.Redis`` for every publish (``run``'s enqueue) and for
every delivery and acknowledgement of a task under ``acks_late`` (two per replay in the worker).
A client is cheap to use but not to make: its constructor copies some 170 response callbacks,
which cost a quarter of a publish's CPU here (520 us a publish with them, 396 without) and a
third of a get + ack's. The commands and their keys are
kombu's own; only the client object is kept and shared. A redis-py client is safe to share
between threads: it takes a connection from its pool for each command, and every pipeline is a
new object.

Used for ``redis://`` broker URLs (config/settings.py): other schemes (``rediss://``, sockets,
Sentinel) keep kombu's transport as it is, with the TLS defaults kombu ties to their scheme.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis


# celery-types' stubs of kombu leave out the channel's private client factory.
class Channel(redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            # The consumer's own connection (BRPOP, its poller): one per channel already.
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        client = self._shared_client
        # A channel that reconnects gets a new pool; the client follows it.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[misc]
        return client


class Transport(redis.Transport):
    Channel = Channel
