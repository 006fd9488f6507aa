"""The reconciler in-process: which read a notification causes, scopes merged, the periodic
full read as the fallback, and reloads applied before the diff that needs them."""

from __future__ import annotations

import asyncio

from scheduler_app.engine.counters import Counters
from scheduler_app.engine.reconcile import Reconciler
from scheduler_app.jobtable import Diff


class FakeTable:
    def __init__(self) -> None:
        self.reads: list[tuple] = []
        self.next = Diff()

    def full(self) -> Diff:
        self.reads.append(("full",))
        return self.next

    def partial(self, job_ids, plugin_ids) -> Diff:
        self.reads.append(("partial", set(job_ids), set(plugin_ids)))
        return self.next


class FakeDatabase:
    async def read(self, fn, *args):
        return fn(*args)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.applied = asyncio.Event()

    def apply(self, diff: Diff) -> None:
        self.events.append(("apply", diff))
        self.applied.set()

    async def reload(self, packages: dict[str, int]) -> None:
        self.events.append(("reload", packages))


def reconciler(seconds: float = 60) -> tuple[Reconciler, FakeTable, Recorder]:
    table, recorder = FakeTable(), Recorder()
    return Reconciler(FakeDatabase(), table, seconds, recorder.apply, recorder.reload, Counters()), table, recorder


async def next_apply(recorder: Recorder) -> None:
    await asyncio.wait_for(recorder.applied.wait(), 5)
    recorder.applied.clear()


async def test_notifications_are_merged_into_one_partial_read_and_an_unscoped_one_reads_everything():
    rec, table, recorder = reconciler()
    rec.want(job_ids=[1])
    rec.want(job_ids=[2], plugin_ids=[9])  # both arrive before the loop wakes up
    loop = asyncio.ensure_future(rec.loop())
    await next_apply(recorder)
    assert table.reads == [("partial", {1, 2}, {9})]
    rec.want()
    await next_apply(recorder)
    assert table.reads[-1] == ("full",)
    assert rec.counters.reconciles == 2
    loop.cancel()


async def test_without_notifications_the_whole_table_is_read_every_period():
    rec, table, recorder = reconciler(seconds=0.02)
    loop = asyncio.ensure_future(rec.loop())
    await next_apply(recorder)
    await next_apply(recorder)
    assert table.reads == [("full",), ("full",)]
    loop.cancel()


async def test_new_code_is_loaded_before_the_diff_is_applied():
    rec, table, recorder = reconciler()
    table.next = Diff(reloaded={"p.x": 2})
    await rec.once()
    assert [kind for kind, _ in recorder.events] == ["reload", "apply"]
    assert recorder.events[0][1] == {"p.x": 2}


async def test_a_failed_read_is_retried():
    rec, table, recorder = reconciler()
    failures = [RuntimeError("database went away")]

    def flaky() -> Diff:
        if failures:
            raise failures.pop()
        return Diff()

    table.full = flaky  # type: ignore[method-assign]
    rec.want()
    loop = asyncio.ensure_future(rec.loop())
    await asyncio.wait_for(recorder.applied.wait(), 5)  # after one failure and the 1 s pause
    assert failures == []
    loop.cancel()
