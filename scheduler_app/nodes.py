"""Scheduler nodes: who is alive, who was declared lost, and what happens to their runs.

Every engine process registers a ``SchedulerNode`` row and updates ``last_heartbeat`` every
``HEARTBEAT_SECONDS``; the heartbeat also reads the live members (for the division of jobs,
``cluster.Membership``). A node whose heartbeat is older than ``LOST_AFTER_SECONDS`` is
*declared lost* by a live node: a conditional update sets its ``lost_at`` (the declaration
and the heartbeat race on that one row, so exactly one of them wins), and in the same
transaction its ``running`` runs are marked ``lost`` (again conditionally: only runs still
running on that node). The runs of a node that stopped cleanly yet left runs behind, or of an
unknown node, are marked lost the same way.

Fencing: a declared node's heartbeat no longer updates its row (``lost_at`` is set), so it
learns it was declared and rejoins under a new name, after cancelling its runs
(``cluster.Lease`` makes it cancel them even earlier, when its own heartbeats stop getting
through). The writer finishes a run only while it is still ``running`` on its node, so
nothing is written over a ``lost`` run.

These functions are synchronous: the engine runs them in its writer thread.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q

from scheduler_app.models import JobRun, SchedulerNode
from scheduler_app.streams import RunSnapshot


def tune_engine_session(lock_timeout_seconds: float | None = None) -> None:
    """PostgreSQL: set up one of the engine's own connections (writer, claims, heartbeat).

    - Its transactions left open for a third of LOST_AFTER_SECONDS are ended. A transaction is
      open that long only when the process froze (SIGSTOP, VM pause) in the middle of it; its
      row locks would hold up the nodes that declare it lost and take its jobs over.
    - With ``lock_timeout_seconds`` a statement also gives up waiting for a lock that long (the
      heartbeat: a late heartbeat is worse than a failed one, which is retried).
    - No bitmap scans. Every finish leaves a dead ``status = 'running'`` entry in the run
      indexes until a vacuum; a claim's "running elsewhere" check and a finish read that range.
      A plain index scan marks the dead entries it meets (later scans skip them, page splits
      drop them); a bitmap scan never does, so when the planner picked one, each claim read
      every run finished since the last vacuum (21,000 entries and 445 heap pages, a third of a
      claim's time, ten seconds into a bench at 5,000 runs/s; on a large table, where vacuums
      are rare, far more). The engine's statements are lookups by key or by that small range:
      none needs a bitmap scan (docs/performance.md, "Saturation, wave 2i").
    """
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    idle_ms = max(500, int(float(settings.SCHEDULER["LOST_AFTER_SECONDS"]) * 1000 / 3))
    with connection.cursor() as cursor:
        cursor.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")
        cursor.execute("SET enable_bitmapscan = off")
        if lock_timeout_seconds is not None:
            cursor.execute(f"SET lock_timeout = {max(100, int(lock_timeout_seconds * 1000))}")


#: Runs of dead nodes marked lost per sweep (a full batch: the heartbeat sweeps again at once).
SWEEP_BATCH = 1000


def make_node_name(configured: str = "") -> str:
    """``host:pid:random``; a configured name gets the pid and random part too, so it stays unique."""
    base = configured or socket.gethostname()
    return f"{base}:{os.getpid()}:{secrets.token_hex(3)}"[:200]


def register(name: str, now: datetime) -> None:
    SchedulerNode.objects.create(
        name=name, hostname=socket.gethostname()[:200], pid=os.getpid(), started_at=now, last_heartbeat=now
    )


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat learned: whether this node still counts, and who else does."""

    #: False: another node declared this one lost; it must cancel its runs and rejoin under a new name
    alive: bool
    #: the live members' names (this node included when alive)
    members: list[str]
    #: another member's last heartbeat is ``LOST_AFTER`` old: it must be declared lost now
    silent: bool = False


def heartbeat(name: str, now: datetime, running_runs: int, scheduled_jobs: int, lost_after_seconds: float) -> Beat:
    updated = SchedulerNode.objects.filter(name=name, lost_at__isnull=True).update(
        last_heartbeat=now, running_runs=running_runs, scheduled_jobs=scheduled_jobs, stopped_at=None
    )
    if not updated:
        if SchedulerNode.objects.filter(name=name).exists():
            return Beat(alive=False, members=[])
        register(name, now)  # deleted by an operator: come back, we are alive
    rows = member_heartbeats(now, lost_after_seconds)
    cutoff = now - timedelta(seconds=lost_after_seconds)
    return Beat(alive=True, members=[n for n, _ in rows], silent=any(n != name and at < cutoff for n, at in rows))


def member_heartbeats(now: datetime, lost_after_seconds: float) -> list[tuple[str, datetime]]:
    """The nodes that share the jobs: registered, neither stopped nor declared lost.

    A node that died stays a member until it is declared lost (then its runs are marked lost in
    the same transaction, so whoever takes its jobs over finds them free); rows older than twice
    ``LOST_AFTER_SECONDS`` are left out anyway, so the rows of nodes that died while nobody
    watched never hold a share.
    """
    recent = now - timedelta(seconds=2 * lost_after_seconds)
    return list(
        SchedulerNode.objects.filter(stopped_at__isnull=True, lost_at__isnull=True, last_heartbeat__gte=recent)
        .order_by("name")
        .values_list("name", "last_heartbeat")
    )


def declare_lost(me: str, now: datetime, lost_after_seconds: float) -> list[str]:
    """Declare lost the nodes silent for ``lost_after_seconds``; return their names.

    Each declaration is a conditional update of the node's row: if its heartbeat got in first,
    it is not declared; if the declaration got in first, its heartbeat finds ``lost_at`` set."""
    cutoff = now - timedelta(seconds=lost_after_seconds)
    silent = SchedulerNode.objects.filter(stopped_at__isnull=True, lost_at__isnull=True, last_heartbeat__lt=cutoff)
    declared = []
    for name in silent.exclude(name=me).values_list("name", flat=True):
        if silent.filter(name=name).update(lost_at=now):
            declared.append(name)
    return declared


def mark_stopped(name: str, now: datetime) -> None:
    SchedulerNode.objects.filter(name=name).update(stopped_at=now, last_heartbeat=now, running_runs=0)


def mark_lost_runs(me: str, now: datetime, lost_after_seconds: float) -> list[RunSnapshot]:
    """Declare silent nodes lost and mark ``lost`` the running runs of lost, stopped or unknown
    nodes; return those runs (for publishing)."""
    with transaction.atomic():
        declare_lost(me, now, lost_after_seconds)
        return _mark_runs_of_dead_nodes(me, now, lost_after_seconds)


def _mark_runs_of_dead_nodes(me: str, now: datetime, lost_after_seconds: float) -> list[RunSnapshot]:
    cutoff = now - timedelta(seconds=lost_after_seconds)
    # A node that stopped cleanly keeps its runs for LOST_AFTER_SECONDS (its stop sets its last
    # heartbeat): its last finishes may still be on their way to the database.
    alive = SchedulerNode.objects.filter(lost_at__isnull=True, last_heartbeat__gte=cutoff).values_list(
        "name", flat=True
    )
    stale = (
        JobRun.objects.filter(status=JobRun.Status.RUNNING)
        .exclude(node=me)
        .exclude(node__in=list(alive))
        .values_list("id", "job_id", "job__plugin_id", "job__user_id", "node", "trigger", "slot", "started_at")
        .order_by()
    )
    rows = list(stale[:SWEEP_BATCH])
    if not rows:
        return []
    lost: list[RunSnapshot] = []
    with transaction.atomic():
        nodes = {r[4] for r in rows}
        seen = {n.name: n for n in SchedulerNode.objects.filter(name__in=nodes)}
        for run_id, job_id, plugin_id, user_id, node, trigger, slot, started_at in rows:
            info = seen.get(node)
            if info is None:
                why = f"node {node} is unknown (its record was deleted)"
            elif info.lost_at is not None:
                why = (
                    f"node {node} stopped sending heartbeats (last at {info.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC, "
                    f"more than {lost_after_seconds:g} s before it was declared lost)"
                )
            elif info.stopped_at is not None:
                why = f"node {node} stopped at {info.stopped_at:%Y-%m-%d %H:%M:%S} UTC without finishing it"
            else:
                continue  # silent but not declared: its heartbeat won the race; it is alive
            error = f"lost: {why}"
            # Conditional: the node may have come back and finished it meanwhile.
            if JobRun.objects.filter(Q(id=run_id), Q(status=JobRun.Status.RUNNING), Q(node=node)).update(
                status=JobRun.Status.LOST, finished_at=now, error=error
            ):
                lost.append(
                    RunSnapshot(
                        id=run_id,
                        job_id=job_id,
                        plugin_id=plugin_id,
                        user_id=user_id,
                        trigger=trigger,
                        slot=slot,
                        node=node,
                        status=JobRun.Status.LOST.value,
                        started_at=started_at,
                        finished_at=now,
                        error=error,
                    )
                )
    return lost
