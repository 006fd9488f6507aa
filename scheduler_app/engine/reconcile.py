"""Keeping the schedule in step with the ``Job`` table, and listening for change notifications.

The reader thread's ``JobTable`` answers "what changed" as a ``Diff``; the loop applies it to
the schedule. A reconcile runs at start, on every ``jobs.changed`` / ``plugin.reload``
notification (only the named jobs and plugins), and every ``RECONCILE_SECONDS`` over all jobs,
the fallback that also catches bulk ``update()`` calls that announce nothing. A full reconcile
of many jobs costs CPU: its period stretches so it never takes more than ~20 % of the time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from scheduler_app import streams
from scheduler_app.engine.access import Database
from scheduler_app.engine.counters import Counters
from scheduler_app.jobtable import Diff, JobTable

log = logging.getLogger("scheduler_app.engine")


class Reconciler:
    def __init__(
        self,
        db: Database,
        table: JobTable,
        seconds: float,
        apply: Callable[[Diff], None],
        reload: Callable[[dict[str, int]], Awaitable[None]],
        counters: Counters,
    ) -> None:
        self.db = db
        self.table = table
        self.seconds = seconds
        self.apply = apply
        self.reload = reload
        self.counters = counters
        self._ready = asyncio.Event()
        self._scope: tuple[set[int], set[int]] | None = None
        self._full_due = False

    def want(self, job_ids: list[int] | None = None, plugin_ids: list[int] | None = None) -> None:
        """Ask for a reconcile of these jobs and plugins (of everything when none are named)."""
        if not job_ids and not plugin_ids:
            self._full_due = True
        else:
            jobs, plugins = self._scope or (set(), set())
            self._scope = (jobs | set(job_ids or ()), plugins | set(plugin_ids or ()))
        self._ready.set()

    async def loop(self) -> None:
        interval = self.seconds
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), interval)
                full = self._full_due
            except TimeoutError:
                full = True
            self._ready.clear()
            scope, self._scope = self._scope, None
            self._full_due = False
            t0 = time.monotonic()
            try:
                await self.once(None if full else scope)
            except Exception as exc:
                log.warning("reconcile failed (%s: %s); retrying", type(exc).__name__, exc)
                # What was asked for is still owed: ask again, after a pause.
                if full or scope is None:
                    self._full_due = True
                else:
                    self.want(list(scope[0]), list(scope[1]))
                self._ready.set()
                await asyncio.sleep(1)
                continue
            if full or scope is None:
                interval = max(self.seconds, (time.monotonic() - t0) * 5)

    async def once(self, scope: tuple[set[int], set[int]] | None = None) -> Diff:
        """One reconcile: of everything (``scope`` None) or of the named (jobs, plugins)."""
        if scope is None:
            diff: Diff = await self.db.read(self.table.full)
        else:
            diff = await self.db.read(self.table.partial, scope[0], scope[1])
        self.counters.reconciles += 1
        if diff.reloaded:
            await self.reload(diff.reloaded)
        self.apply(diff)
        return diff


async def listen(layer: Any, on_message: Callable[[dict[str, Any]], None], on_back: Callable[[], None],
                 fallback_seconds: float) -> None:  # fmt: skip
    """Receive the control group's notifications until cancelled; survive a channel layer outage."""
    if layer is None:
        return
    failing = False
    while True:
        channel = None
        try:
            channel = await layer.new_channel()
            await layer.group_add(streams.CONTROL_GROUP, channel)
            if failing:
                log.warning("listening to change notifications again; reconciling")
                failing = False
                on_back()
            while True:
                on_message(await layer.receive(channel))
        except asyncio.CancelledError:
            if channel is not None:
                try:
                    await asyncio.wait_for(layer.group_discard(streams.CONTROL_GROUP, channel), 1)
                except Exception:
                    pass
            raise
        except Exception as exc:
            if not failing:
                failing = True
                log.warning(
                    "change notifications unavailable (%s: %s); relying on the reconcile every %g s",
                    type(exc).__name__,
                    exc,
                    fallback_seconds,
                )
            await asyncio.sleep(2)
