"""The engine's ways to the database, all off the event loop.

- ``write``: a function run in the batched writer's thread (heartbeat sweeps, retries, deletes),
  in order with the record flushes (``writer.Writer.call``).
- ``claim``: a claim (due slots, queued runs). On PostgreSQL it runs in a claims thread on its
  own connection, so it never waits behind a record flush: with one connection for both, the
  claims of a busy node queued behind flushes of hundreds of finished runs and log lines, and
  that wait was most of the slot-to-start lag (docs/performance.md, "Saturation, wave 2d").
  A claim commits before its runs start either way. On SQLite it stays in the writer's thread:
  SQLite takes one writer at a time, so a second connection would only wait for the lock.
- ``heartbeat``: a heartbeat's transaction (``Heartbeat``'s ``call``). On PostgreSQL ``None``: the
  heartbeat keeps a thread and connection of its own, so it never queues behind claims and
  flushes. On SQLite the writer's thread, before the pending records (calls go first): a second
  writing connection lost SQLite's lock to the writer's back-to-back transactions (its busy
  handler sleeps 1, 2, 5 ... up to 100 ms between tries), so at 12,000 runs/s no heartbeat got
  through for 2.5 s and the node fenced itself; and a heartbeat holding the lock made the
  writer sleep the same way, late claims for every run due meanwhile.
- ``read``: a function run in the reader thread (job table snapshots, queued-run polls,
  retention scans), so a long read never holds up a claim.

A dead connection in the claims or reader thread is dropped so the next call reconnects.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

from scheduler_app.nodes import tune_engine_session
from scheduler_app.writer import Writer


class Database:
    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobscheduler-reader")
        self._claims: ThreadPoolExecutor | None = None
        if connections[DEFAULT_DB_ALIAS].vendor == "postgresql":
            self._claims = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobscheduler-claims")

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.writer.call(fn, *args))

    async def claim(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._claims is None:
            return await self.write(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._claims, _claiming, fn, *args)

    @property
    def heartbeat(self) -> Callable[..., Awaitable[Any]] | None:
        if connections[DEFAULT_DB_ALIAS].vendor != "sqlite":
            return None
        return self._atomic_write

    async def _atomic_write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.write(_atomically, fn, *args)

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._reader, reconnecting(fn), *args)

    def close(self) -> None:
        for executor in (self._claims, self._reader):
            if executor is not None:
                executor.submit(connections.close_all)
                executor.shutdown(wait=True)


def _atomically(fn: Callable[..., Any], *args: Any) -> Any:
    with transaction.atomic():
        return fn(*args)


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


_claims_thread = threading.local()


def _on_claims_connection(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the claims thread, on a connection set up as the writer's is: a claim's
    transaction holds its jobs' row locks, so one left open by a frozen process must end on its
    own (``nodes.tune_engine_session``), or the nodes taking its jobs over would wait for it."""
    connection.ensure_connection()
    if getattr(_claims_thread, "tuned", None) is not connection.connection:
        tune_engine_session()
        _claims_thread.tuned = connection.connection
    return fn(*args)


_claiming = reconnecting(_on_claims_connection)
