"""The heartbeat part's rules, in process with a fake clock and a fake database: the lease
fences a silent node once, a node declared lost rejoins under a new name, member changes are
handed over with the view before, and others are judged only after watching long enough."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scheduler_app import nodes
from scheduler_app.cluster import Membership
from scheduler_app.engine.heartbeat import Heartbeat

ME = "worker:10:aaaaaa"


class FakeDatabase:
    """Answers the heartbeat's statements: the members it is told, or 'declared lost'."""

    def __init__(self) -> None:
        self.members = [ME]
        self.silent = False
        self.declared_lost = False
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def __call__(self, fn: Any, *args: Any) -> Any:
        self.calls.append((fn.__name__, args))
        if fn is nodes.heartbeat:
            if self.declared_lost:
                return nodes.Beat(alive=False, members=[])
            return nodes.Beat(alive=True, members=self.members, silent=self.silent)
        if fn is nodes.mark_lost_runs:
            return []
        return None

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


class World:
    def __init__(self) -> None:
        self.now = 1000.0
        self.db = FakeDatabase()
        self.fences: list[str] = []
        self.member_changes: list[Membership] = []
        self.renames: list[str] = []
        self.heartbeat = Heartbeat(
            ME,
            seconds=0.5,
            lost_after_seconds=3.0,
            load=lambda: (0, 0),
            publish=lambda run: None,
            clock=lambda: datetime.fromtimestamp(self.now, UTC),
            on_fence=self.fences.append,
            on_members=self.member_changes.append,
            on_rename=self.renames.append,
            call=self.db,
            monotonic=lambda: self.now,
        )

    async def beats(self, seconds: float) -> None:
        """Heartbeats every 0.5 s for ``seconds``."""
        end = self.now + seconds
        while self.now < end:
            self.now += 0.5
            await self.heartbeat.beat()


async def test_heartbeats_keep_the_lease_and_silence_fences_the_node_once():
    world = World()
    await world.heartbeat.register()
    await world.beats(5)
    assert world.heartbeat.may_act() and world.fences == []

    world.now += 2.4  # silent (paused, or the database unreachable): the lease still holds
    assert world.heartbeat.may_act()
    world.now += 0.2  # 2.6 s: past LOST_AFTER - one heartbeat
    assert not world.heartbeat.may_act()
    assert len(world.fences) == 1 and "no heartbeat got through for 2.6 s" in world.fences[0]
    world.heartbeat.check_lease()
    assert len(world.fences) == 1, "fenced once, not at every check"

    await world.beats(0.5)
    assert world.heartbeat.may_act(), "a heartbeat got through and nobody declared it lost: it acts again"
    assert world.heartbeat.node == ME


async def test_a_heartbeat_sent_before_a_pause_and_answered_after_it_keeps_the_node_fenced():
    world = World()
    await world.heartbeat.register()
    sent_at = world.now

    async def frozen_during_the_write(fn, *args):
        world.now += 15  # the process froze while the heartbeat was on its way
        return await FakeDatabase.__call__(world.db, fn, *args)

    world.heartbeat._call = frozen_during_the_write
    await world.heartbeat.beat()
    assert world.heartbeat.lease.renewed_at == sent_at
    assert not world.heartbeat.may_act() and len(world.fences) == 1


async def test_a_node_declared_lost_cancels_its_runs_and_rejoins_under_a_new_name():
    world = World()
    await world.heartbeat.register()
    await world.beats(1)
    world.now += 15  # SIGSTOP for 15 s; the others declared it lost meanwhile
    world.db.declared_lost = True
    world.heartbeat.check_lease()  # the loop's first check after SIGCONT
    assert len(world.fences) == 1

    await world.heartbeat.beat()

    assert len(world.fences) == 2 and "declared it lost" in world.fences[1]
    new = world.heartbeat.node
    assert new != ME and new.split(":")[0] == "worker"
    assert world.renames == [new]
    assert world.db.called("register")[-1][0] == new
    assert world.heartbeat.may_act(), "the new node acts at once"
    assert world.heartbeat.membership.me == new and ME not in world.heartbeat.membership.members
    before = world.member_changes[-1]
    assert before.me == ME, "the engine is told the old view: every job of the new node is taken over"


async def test_member_changes_are_handed_over_with_the_view_before():
    world = World()
    await world.heartbeat.register()
    await world.beats(0.5)
    assert world.member_changes == [], "alone, as at the start"
    world.db.members = [ME, "other:20:bbbbbb"]
    await world.beats(0.5)
    assert [view.members for view in world.member_changes] == [(ME,)]
    assert world.heartbeat.membership.members == ("other:20:bbbbbb", ME)  # sorted
    await world.beats(1)
    assert len(world.member_changes) == 1, "the same members: nothing to hand over"


async def test_others_are_judged_only_after_watching_lost_after_without_a_gap():
    world = World()
    await world.heartbeat.register()
    await world.beats(2.5)
    assert world.db.called("mark_lost_runs") == []
    await world.beats(1)
    assert len(world.db.called("mark_lost_runs")) == 1

    # the database was down for 10 s: everybody's heartbeat is old when it comes back
    world.now += 10
    judged = len(world.db.called("mark_lost_runs"))
    await world.beats(2.5)
    assert len(world.db.called("mark_lost_runs")) == judged, "first give the others time to beat"
    await world.beats(1)
    assert len(world.db.called("mark_lost_runs")) > judged


async def test_a_silent_member_is_swept_at_once_and_otherwise_every_lost_after():
    world = World()
    await world.heartbeat.register()
    await world.beats(3)
    swept = len(world.db.called("mark_lost_runs"))
    assert swept == 1, "the first judging heartbeat sweeps (runs of nodes that died while nobody watched)"
    await world.beats(2.5)
    assert len(world.db.called("mark_lost_runs")) == swept, "nobody silent: no sweep at every heartbeat"
    await world.beats(0.5)
    assert len(world.db.called("mark_lost_runs")) == swept + 1, "but one every LOST_AFTER (stopped nodes' runs)"

    world.db.silent = True  # a member killed or paused: its heartbeat is LOST_AFTER old
    await world.beats(0.5)
    assert len(world.db.called("mark_lost_runs")) == swept + 2, "declared at the first heartbeat that sees it"


async def test_a_stopped_node_no_longer_watches_its_lease():
    world = World()
    await world.heartbeat.register()
    await world.heartbeat.stopped()
    world.now += 60
    world.heartbeat.check_lease()
    assert world.fences == []
    assert world.db.called("mark_stopped")


async def test_claims_lock_the_jobs_only_while_the_division_is_unsettled():
    world = World()
    await world.heartbeat.register()
    assert world.heartbeat.division_unsettled(), "just started: the others are adding it"
    await world.beats(6)
    assert not world.heartbeat.division_unsettled(), "stable for 2 x LOST_AFTER: only this node claims its share"
    world.db.members = [ME, "other:20:bbbbbb"]
    await world.beats(0.5)
    assert world.heartbeat.division_unsettled()
    await world.beats(6)
    assert not world.heartbeat.division_unsettled()
    world.now += 2.6  # a stall: fenced, and the others may drop it from their views
    assert not world.heartbeat.may_act()
    await world.beats(0.5)
    assert world.heartbeat.may_act() and world.heartbeat.division_unsettled()
