"""This node's liveness: heartbeats, the live members, loss detection and fencing.

The rules live in ``scheduler_app.cluster`` (the lease, rendezvous shares; pure) and
``scheduler_app.nodes`` (the statements); this part applies them:

- every ``HEARTBEAT_SECONDS`` a heartbeat renews the lease and reads the live members; a
  changed member list is handed to ``on_members`` (the engine takes over the jobs it gained);
- once this node has watched for ``LOST_AFTER_SECONDS`` without a gap it declares silent
  nodes lost and marks their runs lost (``nodes.mark_lost_runs``), publishing those runs: at
  once when the heartbeat's read shows a member silent for ``LOST_AFTER_SECONDS`` (a killed or
  paused node), and every ``LOST_AFTER_SECONDS`` otherwise (the leftover runs of a stopped or
  deleted node, a node silent for so long it no longer shows among the members). Sweeping at
  every heartbeat cost each node three statements twice a second for nothing;
- ``check_lease`` (after every wake-up of runscheduler's loop, see ``scheduler_app.wakeup``,
  and every 0.1 s otherwise) fences this node the moment its lease expires: ``on_fence``
  cancels its runs, and ``may_act`` says no to claims until a heartbeat gets through;
- a heartbeat that finds this node declared lost (it was paused, or cut off for too long)
  fences it and registers it again under a new name (``on_rename``), so nothing of the old
  node is ever written over what the others decided.

On PostgreSQL the statements run in a thread (and connection) of their own, not the writer's:
queued behind the claims and flushes of a busy node, a heartbeat would arrive late and the node
would fence itself, or be declared lost, for being busy. On SQLite, which writes one transaction
at a time, they run in the writer's thread (``access.Database.heartbeat``), ahead of its pending
records. Every database call and the clocks can be
replaced, so tests/test_engine_heartbeat.py checks each rule in process with a fake clock.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from django.db import connections, transaction

from scheduler_app import metrics, nodes
from scheduler_app.cluster import Lease, Membership
from scheduler_app.engine.access import reconnecting
from scheduler_app.streams import RunSnapshot

log = logging.getLogger("scheduler_app.engine")

#: How often the lease is checked where the loop has no wake-up hook (an embedded engine).
LEASE_CHECK_SECONDS = 0.1

Call = Callable[..., Awaitable[Any]]


class Heartbeat:
    def __init__(
        self,
        node: str,
        *,
        seconds: float,
        lost_after_seconds: float,
        load: Callable[[], tuple[int, int]],
        publish: Callable[[RunSnapshot], None],
        clock: Callable[[], datetime],
        on_fence: Callable[[str], None] = lambda reason: None,
        on_members: Callable[[Membership], None] = lambda before: None,
        on_rename: Callable[[str], None] = lambda name: None,
        call: Call | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.seconds = seconds
        self.lost_after_seconds = lost_after_seconds
        self.load = load  # (running runs, scheduled jobs), reported with each beat
        self.publish = publish
        self.clock = clock
        self.on_fence = on_fence
        self.on_members = on_members
        self.on_rename = on_rename
        self.monotonic = monotonic
        # One heartbeat's worth less than the others wait: this node stops first.
        self.lease = Lease(lost_after_seconds, margin=seconds)
        #: the live members; this node claims the slots of its share of the jobs only
        self.membership = Membership(node)
        self.fenced = False
        self.fence_reason = ""
        #: when this node last saw the members change (it started, joined, lost or renamed one)
        self._members_changed_at = monotonic()
        #: when the next sweep is due without a silent member (monotonic seconds)
        self._next_sweep = 0.0
        self._stopped = False
        self._failing_since: float | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._call: Call = call or self._in_own_thread

    # -- the database, in a thread of its own ------------------------------------------------

    async def _in_own_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobscheduler-heartbeat")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, _atomic_reconnecting(fn, self.seconds), *args
        )

    def close(self) -> None:
        if self._executor is not None:
            self._executor.submit(connections.close_all)
            self._executor.shutdown(wait=True)

    # -- beats -------------------------------------------------------------------------------

    async def register(self) -> None:
        sent = self.monotonic()
        await self._call(nodes.register, self.node, self.clock())
        self.lease.renewed(sent)

    async def beat(self) -> None:
        """One heartbeat: renew the lease, learn the members, declare silent nodes lost."""
        sent, node, at = self.monotonic(), self.node, self.clock()
        running, scheduled = self.load()
        beat: nodes.Beat = await self._call(nodes.heartbeat, node, at, running, scheduled, self.lost_after_seconds)
        if self._failing_since is not None:
            log.warning("heartbeats get through again after %.1f s", self.monotonic() - self._failing_since)
            self._failing_since = None
        if not beat.alive:
            await self.rejoin(node)
            return
        self.lease.renewed(sent)
        metrics.node_heartbeat(at.timestamp())
        # A heartbeat sent before a pause and answered after it renews nothing: still fenced.
        if self.fenced and self.lease.valid(self.monotonic()):
            self.fenced = False
            # The others may have dropped it from their views meanwhile: lock while they re-add it.
            self._members_changed_at = self.monotonic()
            log.warning("node %s: heartbeats get through again; claiming again", node)
        before = copy.copy(self.membership)
        if self.membership.update(beat.members):
            self._members_changed_at = self.monotonic()
            self.on_members(before)
        now = self.monotonic()
        if self.lease.may_judge(now) and (beat.silent or now >= self._next_sweep):
            self._next_sweep = now + self.lost_after_seconds
            if len(await self.sweep()) >= nodes.SWEEP_BATCH:
                self._next_sweep = now  # more left: the next heartbeat goes on

    async def sweep(self) -> list[RunSnapshot]:
        """Declare silent nodes lost and mark lost the runs of lost, stopped or unknown nodes."""
        lost: list[RunSnapshot] = await self._call(
            nodes.mark_lost_runs, self.node, self.clock(), self.lost_after_seconds
        )
        for run in lost:
            log.warning("run %s of job %s marked lost: %s", run.id, run.job_id, run.error)
            self.publish(run)
        return lost

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            try:
                await self.beat()
            except Exception as exc:
                if self._failing_since is None:
                    self._failing_since = self.monotonic()
                    log.warning(
                        "heartbeat failed (%s: %s); this node stops claiming and cancels its runs unless one gets "
                        "through within %.1f s",
                        type(exc).__name__,
                        exc,
                        max(0.0, self.lease.expires_in(self.monotonic())),
                    )

    async def lease_loop(self) -> None:
        """The lease check where the loop cannot run it at each wake-up (an embedded engine)."""
        while True:
            self.check_lease()
            await asyncio.sleep(LEASE_CHECK_SECONDS)

    # -- fencing -------------------------------------------------------------------------------

    def division_unsettled(self) -> bool:
        """Whether another node may still be claiming a job of this node's share.

        Every node reads the same member list within a heartbeat or two of a change, so views can
        differ only shortly after one; ``2 * LOST_AFTER`` leaves room for late heartbeats. Any
        node seeing a change (a start, a join, a loss, a rename) keeps locking that long."""
        return self.monotonic() - self._members_changed_at < 2 * self.lost_after_seconds

    def may_act(self) -> bool:
        """Whether this node may claim and start runs now."""
        self.check_lease()
        return not self.fenced

    def check_lease(self) -> None:
        """Fence this node the moment it can no longer be sure the others count it alive."""
        if self.fenced or self._stopped:
            return
        now = self.monotonic()
        if not self.lease.valid(now):
            silent = now - self.lease.renewed_at if self.lease.renewed_at is not None else 0.0
            self.fence(f"no heartbeat got through for {silent:.1f} s: paused, overloaded or cut off from the database")

    def fence(self, reason: str) -> None:
        self.fenced = True
        self.fence_reason = reason
        log.warning("node %s fenced (%s): cancelling its runs, claiming nothing until a heartbeat gets through",
                    self.node, reason)  # fmt: skip
        self.on_fence(reason)

    async def rejoin(self, old: str) -> None:
        """Declared lost by another node (its runs are marked lost): cancel what still runs and
        register again under a new name."""
        self.fence(f"another node declared it lost after {self.lost_after_seconds:g} s without a heartbeat")
        new = nodes.make_node_name(old.rsplit(":", 2)[0])
        self.lease.reset()
        sent = self.monotonic()
        await self._call(nodes.register, new, self.clock())
        self.lease.renewed(sent)
        self.node = new
        self.fenced = False
        before = copy.copy(self.membership)
        self.membership.rename(new)
        self._members_changed_at = self.monotonic()
        log.warning("node %s was declared lost by another node (paused or cut off for over %g s); its runs were "
                    "cancelled and marked lost; rejoined as %s", old, self.lost_after_seconds, new)  # fmt: skip
        self.on_rename(new)
        self.on_members(before)

    async def stopped(self) -> None:
        """Say this node stopped; no heartbeat follows, so the lease is no longer watched."""
        self._stopped = True
        try:
            await self._call(nodes.mark_stopped, self.node, self.clock())
        except Exception as exc:
            log.warning("could not mark node %s stopped: %s", self.node, exc)


#: per thread: the connection whose session limits are set
_limited = threading.local()


def _atomic_reconnecting(fn: Callable[..., Any], lock_timeout: float) -> Callable[..., Any]:
    """One transaction per call; a dead connection is dropped so the next call reconnects."""

    def call(*args: Any) -> Any:
        from django.db import connection

        if connection.connection is None or connection.connection is not getattr(_limited, "connection", None):
            connection.ensure_connection()
            nodes.tune_engine_session(lock_timeout)
            _limited.connection = connection.connection
        with transaction.atomic():
            return fn(*args)

    return reconnecting(call)
