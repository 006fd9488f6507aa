"""What the engine does when the cluster changes (``engine.division``), in-process: a fenced node
stops every run, a claim won just before the fence is recorded cancelled, and a node that gains
jobs claims the latest slot of each (the rules of who owns what: ``test_cluster.py``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from scheduler_app import JobPlugin, hookimpl, plugin_host, slots
from scheduler_app.cluster import Membership
from scheduler_app.contract import RunContext
from scheduler_app.engine.division import Division
from scheduler_app.engine.schedule import Schedule, slot_at_or_before
from scheduler_app.engine.supervisor import CANCELLED, SupervisedRun, Supervisor
from scheduler_app.jobtable import Diff, JobSpec
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import RunFinish

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW_MS = slots.to_ms(T0) + 4321


class FakeWriter:
    def __init__(self) -> None:
        self.finished: list[RunFinish] = []

    def finish_run(self, finish: RunFinish) -> None:
        self.finished.append(finish)


class Sleeper(JobPlugin):
    @hookimpl
    async def run(self, config, context):
        await asyncio.sleep(10)


def spec(job_id: int) -> JobSpec:
    return JobSpec(id=job_id, user_id=1, username="alice", plugin_id=1, package="p.x@v1.plugin.Plugin",
                   interval=10, timeout=30, config={}, code_version=1, updated_ms=0)  # fmt: skip


def snapshot(run_id: int, node: str = "n1") -> RunSnapshot:
    return RunSnapshot(id=run_id, job_id=run_id, plugin_id=1, user_id=1, trigger="schedule", slot=T0, node=node,
                       status="running")  # fmt: skip


def division(schedule: Schedule, supervisor: Supervisor, writer: FakeWriter, membership: list[Membership],
             offered: list) -> Division:  # fmt: skip
    return Division(schedule, supervisor, writer, membership=lambda: membership[0], offer=offered.extend,  # type: ignore[arg-type]
                    clock=lambda: T0, now_ms=lambda: NOW_MS)  # fmt: skip


async def test_a_fenced_node_cancels_every_run_with_the_reason():
    writer = FakeWriter()
    supervisor = Supervisor(writer)
    plugin = plugin_host.load_class(Sleeper)

    async def prepare():
        return plugin, None

    runs = [supervisor.start(SupervisedRun(snapshot(i), RunContext(logger=logging.getLogger("t")),
                                           None, "p", prepare)) for i in (1, 2)]  # fmt: skip
    await asyncio.sleep(0.01)
    division(Schedule(), supervisor, writer, [Membership("n1")], []).fence("lease expired")
    await asyncio.wait([r.task for r in runs if r.task], timeout=2)
    assert sorted(f.run.id for f in writer.finished) == [1, 2]
    for finish in writer.finished:
        assert finish.run.status == CANCELLED
        assert "could not confirm it was alive (lease expired)" in finish.run.error
    assert all(r.context.cancelled.is_set() for r in runs)


def test_a_claim_won_just_before_the_fence_is_recorded_cancelled_never_started():
    writer = FakeWriter()
    run = snapshot(7, node="n2")
    division(Schedule(), Supervisor(writer), writer, [Membership("n2")], []).give_up(run)
    [finish] = writer.finished
    assert finish.run is run and run.status == CANCELLED and run.finished_at == T0
    assert run.error == "cancelled: scheduler node n2 was fenced before the run could start"


def test_a_node_that_gains_jobs_offers_the_latest_slot_of_each_once():
    jobs = [spec(job_id) for job_id in range(1, 21)]
    schedule = Schedule()
    schedule.apply(Diff(upserted=jobs), NOW_MS - 100_000)
    alone = Membership("n1")
    alone_before = Membership("n1")
    alone_before.update(["n1", "n2"])
    offered: list = []
    current = [alone]
    # n2 left: n1 owned its share of two, now owns every job
    division(schedule, Supervisor(FakeWriter()), FakeWriter(), current, offered).members_changed(alone_before)
    gained = {job.id for job in jobs if not alone_before.mine(job.id)}
    assert gained, "with two members n1 owned only a share"
    assert {s.id for s, _ in offered} == gained
    assert all(slot == slot_at_or_before(s, NOW_MS) for s, slot in offered)
    offered.clear()
    division(schedule, Supervisor(FakeWriter()), FakeWriter(), current, offered).members_changed(alone)
    assert offered == [], "nothing is gained twice"
