"""The engine's two ways to the database, both off the event loop.

- ``write``: a function run in the batched writer's thread (claims, heartbeats, deletes), in
  order with the record flushes (``writer.Writer.call``).
- ``read``: a function run in the reader thread (job table snapshots, queued-run polls,
  retention scans), so a long read never holds up a claim.

A dead connection in the reader is dropped so the next call reconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections

from scheduler_app.writer import Writer


class Database:
    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobscheduler-reader")

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.writer.call(fn, *args))

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._reader, reconnecting(fn), *args)

    def close(self) -> None:
        self._reader.submit(connections.close_all)
        self._reader.shutdown(wait=True)


def reconnecting(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that drops this thread's connection when it fails, so the next call reconnects."""

    def call(*args: Any) -> Any:
        from django.db import InterfaceError, OperationalError, connection

        try:
            return fn(*args)
        except (OperationalError, InterfaceError):
            try:
                connection.close()
            except Exception:
                pass
            raise

    return call
