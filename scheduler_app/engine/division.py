"""What the engine does when the cluster changes: fencing, and the division of jobs.

The rules live in ``scheduler_app.cluster`` (which node owns a job) and ``engine.heartbeat``
(when this node is alive, when it must fence); this module applies their verdicts to this
node's runs and schedule:

- ``fence(reason)``: this node may have been declared lost; every run stops now (cancelled,
  with the reason), since another node may already run the same jobs.
- ``members_changed(before)``: the live members changed; the schedule hands over the jobs this
  node no longer owns and the latest slot of each job it takes over goes to the claimer (so
  a slot due while the division moved is run once, by its new owner).
- ``give_up(run)``: a claim won just before this node was fenced is recorded cancelled and
  never started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from scheduler_app.cluster import Membership
from scheduler_app.engine.schedule import Schedule
from scheduler_app.engine.supervisor import CANCELLED, Supervisor
from scheduler_app.jobtable import JobSpec
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import RunFinish, Writer

log = logging.getLogger("scheduler_app.engine")


class Division:
    def __init__(
        self,
        schedule: Schedule,
        supervisor: Supervisor,
        writer: Writer,
        *,
        membership: Callable[[], Membership],
        offer: Callable[[list[tuple[JobSpec, int]]], None],
        clock: Callable[[], datetime],
        now_ms: Callable[[], int],
    ) -> None:
        self.schedule = schedule
        self.supervisor = supervisor
        self.writer = writer
        self.membership = membership
        self.offer = offer
        self.clock = clock
        self.now_ms = now_ms

    def fence(self, reason: str) -> None:
        """This node may have been declared lost: stop every run now."""
        for run in list(self.supervisor.active.values()):
            self.supervisor.cancel(run, CANCELLED, f"cancelled: scheduler node {run.run.node} could not confirm it "
                                   f"was alive ({reason}); another node may run the job")  # fmt: skip

    def members_changed(self, before: Membership) -> None:
        """Claim the latest slot of each job this node takes over; say what it runs now."""
        membership = self.membership()
        owned, due = self.schedule.take_over(
            before.mine if before.me == membership.me else (lambda job_id: False), membership.mine, self.now_ms()
        )
        log.info("members: %s; node %s runs %d of %d jobs (%d taken over)", ", ".join(membership.members),
                 membership.me, owned, len(self.schedule), len(due))  # fmt: skip
        if due:
            self.offer(due)

    def give_up(self, run: RunSnapshot) -> None:
        """A claim won just before this node was fenced: recorded cancelled, never started."""
        run.status, run.finished_at = CANCELLED, self.clock()
        run.error = f"cancelled: scheduler node {run.node} was fenced before the run could start"
        self.writer.finish_run(RunFinish(run, "", 0))
