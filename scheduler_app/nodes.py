"""Scheduler nodes: who is alive, and what happens to the runs of a node that died.

Every engine process registers a ``SchedulerNode`` row and updates ``last_heartbeat`` every
``HEARTBEAT_SECONDS``; ``models.alive_condition`` is the rule for which nodes are alive. Any
live node, on each heartbeat, marks ``lost`` the runs still ``running`` on a node that stopped
(cleanly, yet left runs behind) or whose heartbeat is older than ``LOST_AFTER_SECONDS``. So a
run of a node killed with -9 is marked lost at most ``LOST_AFTER_SECONDS + HEARTBEAT_SECONDS``
after the node's last heartbeat, as long as one node is alive (otherwise when the next one
starts).

These functions are synchronous: the engine runs them in its writer thread.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from scheduler_app.models import JobRun, SchedulerNode
from scheduler_app.streams import RunSnapshot


def make_node_name(configured: str = "") -> str:
    """``host:pid:random``; a configured name gets the pid and random part too, so it stays unique."""
    base = configured or socket.gethostname()
    return f"{base}:{os.getpid()}:{secrets.token_hex(3)}"[:200]


def register(name: str, now: datetime) -> None:
    SchedulerNode.objects.create(
        name=name, hostname=socket.gethostname()[:200], pid=os.getpid(), started_at=now, last_heartbeat=now
    )


def heartbeat(name: str, now: datetime, running_runs: int, scheduled_jobs: int) -> None:
    updated = SchedulerNode.objects.filter(name=name).update(
        last_heartbeat=now, running_runs=running_runs, scheduled_jobs=scheduled_jobs, stopped_at=None
    )
    if not updated:  # deleted by an operator: come back, we are alive
        register(name, now)


def mark_stopped(name: str, now: datetime) -> None:
    SchedulerNode.objects.filter(name=name).update(stopped_at=now, last_heartbeat=now, running_runs=0)


def mark_lost_runs(me: str, now: datetime, lost_after_seconds: float) -> list[RunSnapshot]:
    """Mark ``lost`` the running runs of dead nodes; return them (for publishing)."""
    alive = SchedulerNode.objects.alive(now, lost_after_seconds).values_list("name", flat=True)
    stale = (
        JobRun.objects.filter(status=JobRun.Status.RUNNING)
        .exclude(node=me)
        .exclude(node__in=list(alive))
        .values_list("id", "job_id", "job__plugin_id", "job__user_id", "node", "trigger", "slot", "started_at")
        .order_by()
    )
    rows = list(stale[:1000])
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
            elif info.stopped_at is not None:
                why = f"node {node} stopped at {info.stopped_at:%Y-%m-%d %H:%M:%S} UTC without finishing it"
            else:
                why = (
                    f"node {node} stopped sending heartbeats (last at {info.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC, "
                    f"more than {lost_after_seconds:g} s ago)"
                )
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
