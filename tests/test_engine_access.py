"""The engine's ways to the database (``scheduler_app.engine.access``): where a claim runs.

On PostgreSQL a claim has its own thread and connection, so it does not wait behind whatever
the writer thread is doing (a record flush); on SQLite it runs in the writer's thread, after
what is queued there (one writer at a time). Real threads, the real database."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from scheduler_app.engine.access import Database
from scheduler_app.writer import Writer


def _session_settings() -> dict[str, str]:
    with connection.cursor() as cursor:
        settings = {}
        for name in ("enable_bitmapscan", "idle_in_transaction_session_timeout", "lock_timeout"):
            cursor.execute(f"SHOW {name}")
            settings[name] = cursor.fetchone()[0]
    return settings


def _claim_probe(release: threading.Event) -> tuple[str, bool, str | None]:
    """What a claim sees: its thread, whether the writer's work was over, and (PostgreSQL) its
    session's idle-transaction limit."""
    limit = None
    if connection.vendor == "postgresql":
        limit = _session_settings()["idle_in_transaction_session_timeout"]
    return threading.current_thread().name, release.is_set(), limit


@pytest.mark.django_db(transaction=True)
def test_a_claim_on_postgresql_does_not_wait_for_the_writer_and_on_sqlite_follows_it():
    writer = Writer(flush_interval=0.01)
    writer.start()
    db = Database(writer)
    release, busy = threading.Event(), threading.Event()
    postgres = connection.vendor == "postgresql"

    def long_flush() -> None:  # the writer thread held up, as by a large record flush
        busy.set()
        release.wait(30)

    async def scenario() -> tuple[str, bool, str | None]:
        held = asyncio.ensure_future(db.write(long_flush))
        assert await asyncio.to_thread(busy.wait, 10)
        claim = asyncio.ensure_future(db.claim(_claim_probe, release))
        if postgres:  # it must finish while the writer is still held (else: the timeout, a failure)
            result = await asyncio.wait_for(claim, 20)
            release.set()
        else:  # it can only run once the writer's work is over
            release.set()
            result = await asyncio.wait_for(claim, 20)
        await held
        return result

    try:
        thread, writer_was_done, limit = asyncio.run(scenario())
    finally:
        release.set()
        db.close()
        writer.stop(10)
    if postgres:
        assert thread.startswith("jobscheduler-claims") and not writer_was_done
        assert limit not in (None, "0"), "the claims connection has no idle-in-transaction limit"
    else:
        assert thread == "jobscheduler-writer" and writer_was_done


def _heartbeat_probe() -> tuple[str, bool]:
    return threading.current_thread().name, connection.in_atomic_block


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_on_sqlite_is_one_transaction_in_the_writer_thread_and_on_postgresql_has_its_own():
    """On SQLite a second writing connection fought the writer for the lock (busy-handler sleeps
    of up to 100 ms on both sides) and, at 12,000 runs/s, got no heartbeat through for 2.5 s."""
    writer = Writer(flush_interval=0.01)
    writer.start()
    db = Database(writer)
    try:
        if connection.vendor == "postgresql":
            assert db.heartbeat is None  # Heartbeat then keeps its own thread and connection
            return
        assert db.heartbeat is not None
        thread, atomic = asyncio.run(db.heartbeat(_heartbeat_probe))
    finally:
        db.close()
        writer.stop(10)
    assert (thread, atomic) == ("jobscheduler-writer", True)



@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's session settings")
@pytest.mark.django_db(transaction=True)
def test_each_engine_connection_on_postgresql_ends_frozen_transactions_and_never_scans_a_bitmap():
    """The writer's, the claims' and the heartbeat's connections are set up by
    ``nodes.tune_engine_session``: a bitmap scan of the runs' ``status = 'running'`` range reads
    every run finished since the last vacuum, each time (see there)."""
    from scheduler_app.engine.heartbeat import _atomic_reconnecting

    writer = Writer(flush_interval=0.01)
    writer.start()
    db = Database(writer)
    heartbeat = ThreadPoolExecutor(max_workers=1)

    async def scenario() -> list[dict[str, str]]:
        loop = asyncio.get_running_loop()
        return [
            await db.write(_session_settings),
            await db.claim(_session_settings),
            await loop.run_in_executor(heartbeat, _atomic_reconnecting(_session_settings, 2.0)),
        ]

    try:
        written, claimed, beat = asyncio.run(scenario())
    finally:
        heartbeat.submit(connections.close_all).result()
        heartbeat.shutdown()
        db.close()
        writer.stop(10)
    for settings in (written, claimed, beat):
        assert settings["enable_bitmapscan"] == "off"
        assert settings["idle_in_transaction_session_timeout"] not in ("0", "")
    assert beat["lock_timeout"] == "2s" and written["lock_timeout"] == claimed["lock_timeout"] == "0"
