"""The Redis channel layer, with connection pools that wait for a free connection.

channels_redis builds one redis-py ``ConnectionPool`` per event loop, and since redis-py 6 that
pool holds at most 100 connections and raises ``MaxConnectionsError`` on the 101st concurrent
command: 200 browsers opening their live logs at once (each ``group_add`` borrows a connection)
answered some handshakes with a 500. A ``BlockingConnectionPool`` of the same bound makes the
extra commands wait a moment for a connection instead. Commands are short (the one long one,
the blocking read of a process's messages, is a single connection per process), so a waiting
command gets a connection within milliseconds; the timeout only matters when Redis hangs.
"""

from __future__ import annotations

from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool


class WaitingRedisChannelLayer(RedisChannelLayer):
    """channels_redis's ``RedisChannelLayer`` whose pools wait (``hosts`` entries with an
    ``address`` may carry ``max_connections`` and ``timeout``, the pool's bound and wait)."""

    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        if "address" not in host:  # sentinel set-ups: channels_redis's own pool
            return super().create_pool(index)
        address = host.pop("address")
        return BlockingConnectionPool.from_url(address, **host)
