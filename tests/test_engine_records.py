"""Claims, the batched writer, lost runs and retention, against the real database."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_app import claims, nodes, retention, services, slots
from scheduler_app import writer as writer_module
from scheduler_app.jobtable import Diff, JobTable
from scheduler_app.models import Job, JobRun, LogLine, Plugin, SchedulerNode
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import Batch, PendingLine, RunFinish, Writer, write_batch
from tests.engine_support import probe_job, probe_plugin

pytestmark = pytest.mark.django_db


def _running(run: JobRun, node: str) -> JobRun:
    JobRun.objects.filter(pk=run.pk).update(status=JobRun.Status.RUNNING, node=node)
    run.refresh_from_db()
    return run


def is_postgres_url() -> bool:
    return os.environ.get("DB_CONNECTION", "").startswith("postgres")


def _finished(run: JobRun, status: str, now: datetime, error: str = "") -> RunSnapshot:
    snapshot = RunSnapshot.of(run)
    snapshot.status, snapshot.started_at, snapshot.finished_at, snapshot.error = status, now, now, error
    return snapshot


def _claim(job: Job, slot_ms: int, node: str = "a") -> dict:
    return claims.claim_slots(node, [claims.SlotClaim(job.pk, slot_ms, job.plugin.package)], timezone.now())


def test_a_slot_is_claimed_once(alice):
    job = probe_job(alice, probe_plugin())
    slot = slots.slot_after(slots.to_ms(timezone.now()), job.pk, 1)
    won = _claim(job, slot, "a")
    assert list(won) == [(job.pk, slot)]
    JobRun.objects.filter(pk=won[(job.pk, slot)]).update(status=JobRun.Status.SUCCEEDED)
    assert _claim(job, slot, "b") == {}, "the unique (job, slot) decides"
    run = JobRun.objects.get()
    assert (run.node, run.status, run.trigger) == ("a", JobRun.Status.SUCCEEDED, JobRun.Trigger.SCHEDULE)
    assert slots.to_ms(run.slot) == slot


def test_a_job_running_anywhere_is_not_claimed_again(alice):
    job = probe_job(alice, probe_plugin())
    slot = slots.slot_after(slots.to_ms(timezone.now()), job.pk, 1)
    assert _claim(job, slot, "a")
    assert _claim(job, slot + 1000, "b") == {}, "still running on node a"


def test_a_batch_claims_one_slot_per_job(alice):
    job = probe_job(alice, probe_plugin())
    slot = slots.slot_after(slots.to_ms(timezone.now()), job.pk, 1)
    wanted = [claims.SlotClaim(job.pk, s, job.plugin.package) for s in (slot, slot + 1000, slot + 2000)]
    assert list(claims.claim_slots("a", wanted, timezone.now())) == [(job.pk, slot + 2000)]
    assert JobRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # the foreign key is checked at the real commit
def test_a_job_deleted_meanwhile_gets_no_run_and_the_others_of_the_round_are_claimed(alice, bob):
    """A job deleted since the schedule last heard of it: the claim leaves it out. Without that,
    its run's foreign key check failed the whole claim at commit, every slot of the round lost."""
    plugin = probe_plugin()
    kept, deleted = probe_job(alice, plugin), probe_job(bob, plugin)
    slot = slots.slot_after(slots.to_ms(timezone.now()), kept.pk, 1)
    wanted = [claims.SlotClaim(job.pk, slot, plugin.package) for job in (kept, deleted)]
    deleted.delete()
    # lock=False: the engine's path once the division is settled (the row locks of
    # ``lock_jobs`` would leave the deleted job out on PostgreSQL by themselves)
    assert list(claims.claim_slots("a", wanted, timezone.now(), lock=False)) == [(kept.pk, slot)]
    assert list(JobRun.objects.values_list("job_id", flat=True)) == [kept.pk]


def test_a_claim_round_pairs_each_won_slot_with_its_own_run(alice):
    """The won runs come back as one row (SQLite) or one result (PostgreSQL), whatever else the
    round met: a slot claimed before (its AUTOINCREMENT id is used up all the same on SQLite), a
    job running on another node, a deleted job, and runs inserted before the round."""
    plugin = probe_plugin()
    jobs = [probe_job(alice, plugin, activate=False) for _ in range(8)]
    slot = slots.slot_after(slots.to_ms(timezone.now()), jobs[0].pk, 1)
    assert _claim(jobs[1], slot, "a") and _claim(jobs[4], slot - 1000, "b")  # taken / running on b
    jobs[6].delete()
    wanted = [claims.SlotClaim(job.pk, slot, plugin.package) for job in jobs]
    won = claims.claim_slots("a", wanted, timezone.now(), lock=False)
    assert sorted(job_id for job_id, _ in won) == [jobs[i].pk for i in (0, 2, 3, 5, 7)]
    stored = dict(JobRun.objects.filter(pk__in=won.values()).values_list("pk", "job_id"))
    assert {run_id: job_id for (job_id, _slot), run_id in won.items()} == stored
    assert all(ms == slot for _job, ms in won)


def test_line_ids_are_the_stored_ids_across_chunks_and_after_earlier_lines(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    first, second = (_running(services.run_now(job), "a") for _ in range(2))
    now = datetime.now(UTC)
    write_batch(Batch([PendingLine(first.pk, 1, now, 20, "earlier")], []))
    lines = [PendingLine(second.pk, seq, now, 20, f"line {seq}") for seq in range(1, writer_module.CHUNK + 3)]
    write_batch(Batch(lines, []))
    stored = dict(LogLine.objects.filter(run=second).values_list("seq", "pk"))
    assert [line.id for line in lines] == [stored[line.seq] for line in lines]
    second.refresh_from_db()
    assert second.log_count == writer_module.CHUNK + 2, "the live count of a run still going"


def test_batch_statements_come_in_few_row_counts_and_pad_little():
    """Padded row counts keep the SQLite statement texts few (the DB-API caches prepared
    statements by text), never cut a batch and never pad more than ``PAD_RATIO``."""
    limit = writer_module.CHUNK
    counts = [writer_module.padded(n, limit) for n in range(1, limit + 1)]
    assert all(n <= rows <= limit for n, rows in zip(range(1, limit + 1), counts, strict=True))
    assert all(rows <= n * writer_module.PAD_RATIO + 1 for n, rows in zip(range(1, limit + 1), counts, strict=True))
    assert len(set(counts)) <= 32
    text, padding = writer_module.values_rows("?", 3, 9, limit)
    assert text.count("(") == writer_module.padded(9, limit) == 10 and padding == [None] * 3


@pytest.mark.parametrize("size", [9, 23, 41])  # each padded with 1, 4 and 7 rows of NULLs
def test_padding_rows_claim_store_and_update_nothing(alice, size):
    plugin = probe_plugin()
    jobs = [probe_job(alice, plugin, activate=False) for _ in range(size)]
    slot = slots.slot_after(slots.to_ms(timezone.now()), jobs[0].pk, 1)
    won = claims.claim_slots("a", [claims.SlotClaim(job.pk, slot, plugin.package) for job in jobs], timezone.now())
    assert sorted(job_id for job_id, _slot in won) == [job.pk for job in jobs]
    assert JobRun.objects.count() == size
    runs = list(JobRun.objects.order_by("id"))
    now = datetime.now(UTC)
    lines = [PendingLine(run.pk, 1, now, 20, f"run {run.pk}") for run in runs]
    # every run but the last finishes; the last one's line is a live count (its own statement)
    finishes = [RunFinish(_finished(run, JobRun.Status.SUCCEEDED, now), "", 1) for run in runs[:-1]]
    write_batch(Batch(lines, finishes))
    assert LogLine.objects.count() == size
    assert [line.id for line in lines] == list(LogLine.objects.order_by("id").values_list("id", flat=True))
    statuses = dict(JobRun.objects.values_list("id", "status"))
    assert [statuses[run.pk] for run in runs] == [JobRun.Status.SUCCEEDED] * (size - 1) + [JobRun.Status.RUNNING]
    assert JobRun.objects.get(pk=runs[-1].pk).log_count == 1


def test_a_queued_run_is_claimed_by_one_node(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    run = services.run_now(job)
    assert claims.queued_run_ids() == [run.pk]
    first = claims.claim_queued("a", [run.pk], set(), timezone.now())
    second = claims.claim_queued("b", [run.pk], set(), timezone.now())
    assert [c.run_id for c in first] == [run.pk] and second == []
    assert first[0].spec.config == job.config
    run.refresh_from_db()
    assert (run.status, run.node) == (JobRun.Status.RUNNING, "a")


def test_the_writer_stores_lines_with_ids_and_finishes_runs(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    run = _running(services.run_now(job), "a")
    now = datetime.now(UTC)
    lines = [PendingLine(run.pk, seq, now, 20, f"line {seq}") for seq in (1, 2, 3)]
    finish = RunFinish(_finished(run, JobRun.Status.SUCCEEDED, now), "", 3)

    write_batch(Batch(lines, [finish]))
    stored = list(LogLine.objects.filter(run=run).order_by("seq"))
    assert [line.id for line in lines] == [line.pk for line in stored]
    assert [line.message for line in stored] == ["line 1", "line 2", "line 3"]
    run.refresh_from_db()
    assert (run.status, run.log_count, run.finished_at) == (JobRun.Status.SUCCEEDED, 3, now)


def test_without_a_publisher_lines_are_stored_without_asking_their_ids_back(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    run = _running(services.run_now(job), "a")
    now = datetime.now(UTC)
    lines = [PendingLine(run.pk, seq, now, 20, f"line {seq}") for seq in (1, 2)]

    write_batch(Batch(lines, [RunFinish(_finished(run, JobRun.Status.SUCCEEDED, now), "", 2)]), line_ids=False)
    assert [line.id for line in lines] == [None, None]
    assert list(LogLine.objects.filter(run=run).order_by("seq").values_list("message", flat=True)) == [
        "line 1",
        "line 2",
    ]


def test_lines_and_errors_are_stored_exactly_whatever_their_characters(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    run = _running(services.run_now(job), "a")
    now = datetime.now(UTC)
    texts = ["100 %s %(x)s done", "quotes ' \" and \\ back\\slash", "é 日本 😀", "two\nlines\ttab", '{"json": [1]}']
    lines = [PendingLine(run.pk, seq, now, 20, text) for seq, text in enumerate(texts, 1)]
    finished = _finished(run, JobRun.Status.FAILED, now, error=texts[1])

    write_batch(Batch(lines, [RunFinish(finished, texts[3], len(texts))]))
    assert list(LogLine.objects.filter(run=run).order_by("seq").values_list("message", flat=True)) == texts
    assert [line.id for line in lines] == list(
        LogLine.objects.filter(run=run).order_by("seq").values_list("id", flat=True)
    )
    run.refresh_from_db()
    assert (run.status, run.error, run.traceback, run.finished_at) == (JobRun.Status.FAILED, texts[1], texts[3], now)


@pytest.mark.django_db(transaction=True)  # foreign keys are checked at the real commit
def test_the_writer_drops_lines_of_a_run_deleted_meanwhile(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    kept = services.run_now(job)
    JobRun.objects.filter(pk=kept.pk).update(status=JobRun.Status.SUCCEEDED)
    gone = services.run_now(job)
    gone_id = gone.pk
    gone.delete()

    now = datetime.now(UTC)
    write_batch(Batch([PendingLine(kept.pk, 1, now, 20, "kept"), PendingLine(gone_id, 1, now, 20, "orphan")], []))
    assert list(LogLine.objects.values_list("message", flat=True)) == ["kept"]


@pytest.mark.django_db(transaction=True)
def test_the_writer_thread_flushes_everything_on_stop(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    run = _running(services.run_now(job), "a")
    committed = []
    writer = Writer(on_committed=committed.append, flush_interval=0.01)
    writer.start()
    now = datetime.now(UTC)
    for seq in range(1, 1201):
        writer.add_line(PendingLine(run.pk, seq, now, 20, f"line {seq}"))
    writer.finish_run(RunFinish(_finished(run, JobRun.Status.FAILED, now, "boom"), "tb", 1200))
    assert writer.call(lambda: JobRun.objects.count()).result(10) == 1
    assert writer.stop(10)
    assert LogLine.objects.filter(run=run).count() == 1200
    run.refresh_from_db()
    assert (run.status, run.error, run.log_count) == (JobRun.Status.FAILED, "boom", 1200)
    assert sum(len(batch.lines) for batch in committed) == 1200


@pytest.mark.django_db(transaction=True)
def test_a_claim_does_not_bring_a_flush_along_records_keep_their_own_timer(alice):
    """Each writer call (a claim, tens a second) used to flush the records too: a transaction per
    claim. Records are written on their own timer; a small buffer waits for more."""
    import time

    job = probe_job(alice, probe_plugin(), activate=False)
    run = _running(services.run_now(job), "a")
    committed = []
    writer = Writer(on_committed=committed.append, flush_interval=1.0)
    writer.start()
    try:
        time.sleep(0.05)  # the thread's first wait has begun
        writer.add_line(PendingLine(run.pk, 1, datetime.now(UTC), 20, "one line"))
        for _ in range(5):
            assert writer.call(lambda: JobRun.objects.count()).result(10) == 1
        assert committed == []  # the calls ran; the line waits for its flush
        deadline = time.monotonic() + 10
        while not committed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [line.message for batch in committed for line in batch.lines] == ["one line"]
    finally:
        assert writer.stop(10)


def test_runs_of_a_silent_node_are_marked_lost(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    now = timezone.now()
    nodes.register("dead:1:x", now - timedelta(seconds=60))
    nodes.register("alive:2:y", now)
    dead_run = services.run_now(job)
    JobRun.objects.filter(pk=dead_run.pk).update(status=JobRun.Status.RUNNING, node="dead:1:x")
    other = probe_job(alice, Plugin.objects.get(), activate=False)
    alive_run = services.run_now(other)
    JobRun.objects.filter(pk=alive_run.pk).update(status=JobRun.Status.RUNNING, node="alive:2:y")

    lost = nodes.mark_lost_runs("me:3:z", now, lost_after_seconds=30)

    assert [r.id for r in lost] == [dead_run.pk]
    dead_run.refresh_from_db()
    alive_run.refresh_from_db()
    assert dead_run.status == JobRun.Status.LOST and "dead:1:x" in dead_run.error
    assert alive_run.status == JobRun.Status.RUNNING
    nodes.mark_stopped("alive:2:y", now)
    assert SchedulerNode.objects.get(name="alive:2:y").stopped_at == now


@pytest.mark.django_db(transaction=True)
def test_a_job_another_node_is_claiming_right_now_is_left_to_it(alice):
    """Claims of one job follow each other (its row is locked): on PostgreSQL a job whose row
    another transaction holds is skipped, so two nodes never claim two slots of it at once."""
    import threading

    from django.db import connection, connections, transaction

    if connection.vendor != "postgresql":
        assert claims.lock_jobs([1, 2]) == {1, 2}, "SQLite writes one transaction at a time: nothing to lock"
        return
    busy, free = probe_job(alice, probe_plugin(), activate=False), None
    free = probe_job(alice, Plugin.objects.get(), activate=False)
    holding, release = threading.Event(), threading.Event()

    def other_node() -> None:
        with transaction.atomic():
            claims.lock_jobs([busy.pk])
            holding.set()
            release.wait(10)
        connections.close_all()

    thread = threading.Thread(target=other_node)
    thread.start()
    try:
        assert holding.wait(10)
        slot = slots.slot_after(slots.to_ms(timezone.now()), busy.pk, 1)
        won = claims.claim_slots(
            "a", [claims.SlotClaim(busy.pk, slot, "p"), claims.SlotClaim(free.pk, slot, "p")], timezone.now()
        )
    finally:
        release.set()
        thread.join(10)
    assert list(won) == [(free.pk, slot)]


def test_a_finish_is_not_written_over_a_run_marked_lost(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    run = _running(services.run_now(job), "paused:1:x")
    now = timezone.now()
    JobRun.objects.filter(pk=run.pk).update(status=JobRun.Status.LOST, error="lost: declared")
    late = [PendingLine(run.pk, 1, now, 20, "written before the pause")]

    write_batch(Batch(late, [RunFinish(_finished(run, JobRun.Status.SUCCEEDED, now), "", 1)]))

    run.refresh_from_db()
    assert (run.status, run.error, run.log_count) == (JobRun.Status.LOST, "lost: declared", 0)
    assert LogLine.objects.filter(run=run).count() == 1, "its log lines are kept: what it did before the pause"


def test_a_finish_is_written_only_by_the_node_that_runs_it(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    run = _running(services.run_now(job), "a")
    now = timezone.now()
    elsewhere = _finished(run, JobRun.Status.SUCCEEDED, now)
    elsewhere.node = "b"
    write_batch(Batch([], [RunFinish(elsewhere, "", 0)]))
    run.refresh_from_db()
    assert run.status == JobRun.Status.RUNNING


def test_a_silent_node_is_declared_lost_then_learns_it_from_its_heartbeat(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    now = timezone.now()
    nodes.register("paused:1:x", now - timedelta(seconds=5))
    nodes.register("me:2:y", now)
    run = _running(services.run_now(job), "paused:1:x")

    lost = nodes.mark_lost_runs("me:2:y", now, lost_after_seconds=3)

    assert [r.id for r in lost] == [run.pk]
    assert "declared lost" in JobRun.objects.get(pk=run.pk).error
    assert SchedulerNode.objects.get(name="paused:1:x").lost_at == now
    beat = nodes.heartbeat("paused:1:x", now + timedelta(seconds=10), 1, 1, lost_after_seconds=3)
    assert beat == nodes.Beat(alive=False, members=[]), "it must cancel its runs and rejoin under a new name"
    assert SchedulerNode.objects.get(name="paused:1:x").last_heartbeat == now - timedelta(seconds=5)
    assert nodes.heartbeat("me:2:y", now, 0, 1, lost_after_seconds=3) == nodes.Beat(alive=True, members=["me:2:y"])


def test_a_heartbeat_that_gets_in_first_keeps_the_node_and_its_runs(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    now = timezone.now()
    nodes.register("slow:1:x", now - timedelta(seconds=5))
    run = _running(services.run_now(job), "slow:1:x")
    nodes.heartbeat("slow:1:x", now, 1, 1, lost_after_seconds=3)

    assert nodes.mark_lost_runs("me:2:y", now, lost_after_seconds=3) == []
    assert nodes.declare_lost("me:2:y", now, lost_after_seconds=3) == []
    assert JobRun.objects.get(pk=run.pk).status == JobRun.Status.RUNNING


def test_a_stopped_node_s_runs_are_lost_only_once_its_last_finishes_had_time_to_arrive(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    now = timezone.now()
    nodes.register("leaving:1:x", now)
    run = _running(services.run_now(job), "leaving:1:x")
    nodes.mark_stopped("leaving:1:x", now)

    assert nodes.mark_lost_runs("me:2:y", now + timedelta(seconds=1), lost_after_seconds=3) == []
    lost = nodes.mark_lost_runs("me:2:y", now + timedelta(seconds=4), lost_after_seconds=3)
    assert [r.id for r in lost] == [run.pk] and "without finishing it" in lost[0].error


def test_members_are_the_nodes_neither_stopped_nor_lost_nor_long_silent(alice):
    now = timezone.now()
    nodes.register("b:2:y", now)
    nodes.register("a:1:x", now - timedelta(seconds=4))  # silent, not declared yet: still a member
    nodes.register("stopped:3:z", now)
    nodes.mark_stopped("stopped:3:z", now)
    nodes.register("ancient:4:w", now - timedelta(hours=1))
    nodes.register("lost:5:v", now - timedelta(seconds=5))
    nodes.declare_lost("b:2:y", now - timedelta(seconds=1), lost_after_seconds=3)

    assert SchedulerNode.objects.get(name="lost:5:v").lost_at is not None
    assert SchedulerNode.objects.get(name="a:1:x").lost_at is None, "silent for 3 s when judged: not yet"
    assert [name for name, _ in nodes.member_heartbeats(now, lost_after_seconds=3)] == ["a:1:x", "b:2:y"]
    beat = nodes.heartbeat("b:2:y", now, 0, 1, lost_after_seconds=3)
    assert beat.members == ["a:1:x", "b:2:y"]
    assert beat.silent, "a:1:x's heartbeat is older than LOST_AFTER: the heartbeat asks for a sweep now"
    nodes.heartbeat("a:1:x", now, 0, 1, lost_after_seconds=3)
    assert not nodes.heartbeat("b:2:y", now, 0, 1, lost_after_seconds=3).silent


def test_retention_prunes_by_age_and_by_count_in_batches(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    now = timezone.now()
    for i in range(12):
        run = JobRun.objects.create(
            job=job, slot=now - timedelta(days=i), status=JobRun.Status.SUCCEEDED, finished_at=now - timedelta(days=i)
        )
        LogLine.objects.create(run=run, seq=1, created_at=now, message="x")
    JobRun.objects.create(job=job, slot=now - timedelta(days=40), status=JobRun.Status.RUNNING)

    deleted = 0
    while n := retention.prune_batch(now, retain_days=10, retain_runs_per_job=5, batch=2):
        assert n <= 2
        deleted += n
    assert deleted == 7
    left = JobRun.objects.filter(status=JobRun.Status.SUCCEEDED)
    assert left.count() == 5 and all((now - r.slot).days < 5 for r in left)
    assert JobRun.objects.filter(status=JobRun.Status.RUNNING).count() == 1, "running runs are never pruned"
    assert LogLine.objects.count() == 5


def test_the_job_table_reports_changes_made_behind_its_back(alice, bob):
    plugin = probe_plugin()
    a = probe_job(alice, plugin)
    table = JobTable()
    first = table.full()
    assert [s.id for s in first.upserted] == [a.pk] and list(table.specs) == [a.pk]
    assert table.full() == Diff(), "nothing changed"

    Job.objects.filter(pk=a.pk).update(config={"mode": "fast", "lines": 4})  # no signal, no notification
    b = probe_job(bob, plugin)
    diff = table.full()
    assert sorted(s.id for s in diff.upserted) == sorted([a.pk, b.pk])

    Plugin.objects.filter(pk=plugin.pk).update(code_version=2)
    assert table.full().reloaded == {plugin.package: 2}

    Job.objects.filter(pk=a.pk).update(active=False)
    b_id = b.pk
    b.delete()
    diff = table.partial(job_ids=[a.pk, b_id])
    assert sorted(diff.removed) == sorted([a.pk, b_id]) and diff.deleted == [b_id]


@pytest.mark.django_db(transaction=True)  # the reconcile's own REPEATABLE READ transaction, as in the engine
def test_a_full_reconcile_on_postgresql_reads_the_rows_only_when_the_stamp_changed(alice, monkeypatch):
    """PostgreSQL: while nothing changed, the periodic full reconcile reads one row (the table's
    stamp), not every job. A change behind its back, the plugin's default timeout (a joined
    value), and a job changed back after a partial read all read the rows again. SQLite has no
    stamp and reads the rows every time."""
    from scheduler_app import jobtable

    plugin = probe_plugin(timeout=30)
    job = probe_job(alice, plugin, mode="fast", lines=1)
    reads: list[bool] = []
    real_read = jobtable.read_rows

    def counted_read(where: Any, paced: bool = False) -> dict[int, tuple[Any, ...]]:
        reads.append(paced)
        return real_read(where, paced)

    monkeypatch.setattr(jobtable, "read_rows", counted_read)
    postgres = connection.vendor == "postgresql"
    table = JobTable()
    assert [s.id for s in table.full().upserted] == [job.pk]
    assert table.full() == Diff() and table.full() == Diff()
    assert len(reads) == (1 if postgres else 3), "unchanged: the stamp alone on PostgreSQL"

    Job.objects.filter(pk=job.pk).update(config={"mode": "fast", "lines": 4})  # no signal, no notification
    assert [s.config for s in table.full().upserted] == [{"mode": "fast", "lines": 4}]
    Plugin.objects.filter(pk=plugin.pk).update(timeout=60)
    assert [s.timeout for s in table.full().upserted] == [60], "the joined plugin's default counts"

    # A notified change is read by a partial reconcile; then the job is changed back behind its
    # back. The table's stamp is now the one of the last whole read, yet the rows held differ.
    before = len(reads)
    Job.objects.filter(pk=job.pk).update(config={"mode": "fast", "lines": 9})
    assert [s.config for s in table.partial(job_ids=[job.pk]).upserted] == [{"mode": "fast", "lines": 9}]
    Job.objects.filter(pk=job.pk).update(config={"mode": "fast", "lines": 4})
    assert [s.config for s in table.full().upserted] == [{"mode": "fast", "lines": 4}], "changed back: read again"
    assert len(reads) == before + 2, "the partial's read and the full one"


def test_the_periodic_full_read_pauses_between_chunks_and_the_start_up_read_does_not(alice, bob, monkeypatch):
    from scheduler_app import jobtable

    plugin = probe_plugin()
    jobs = [probe_job(alice, plugin).pk, probe_job(bob, plugin).pk]
    pauses: list[float] = []
    real_sleep = jobtable.time.sleep
    monkeypatch.setattr(jobtable, "PACED_CHUNK", 1)
    monkeypatch.setattr(jobtable.time, "sleep", lambda s: (pauses.append(s), real_sleep(s)))
    table = JobTable()
    assert sorted(s.id for s in table.full().upserted) == sorted(jobs)
    assert not any(pauses), "the start-up read runs at full speed"

    Job.objects.filter(pk=jobs[0]).update(config={"mode": "fast", "lines": 4})  # behind its back
    pauses.clear()
    diff = table.full()
    assert [s.id for s in diff.upserted] == [jobs[0]], "a paced read finds the same changes"
    assert pauses.count(jobtable.PACED_PAUSE_SECONDS) == 2, "one pause per chunk of rows (a row per chunk here)"


def test_the_rows_read_in_chunks_are_the_rows_the_db_api_gives(monkeypatch):
    """SQLite reads the job table a chunk per JSON row (one step, not one per row): each row
    must make the spec the DB-API's row makes, and two reads must give equal rows (else every
    re-read would find every job changed)."""
    from django.contrib.auth import get_user_model

    from scheduler_app import jobtable

    plugin = probe_plugin(timeout=30)
    owners = [get_user_model().objects.create_user(f"reader{i}", password="x") for i in range(6)]
    jobs = [probe_job(owner, plugin) for owner in owners]
    Job.objects.filter(pk=jobs[0].pk).update(config={"text": 'quote " back\\ \u00e9 \U0001f600', "n": [1.5, None]})
    Job.objects.filter(pk=jobs[1].pk).update(schedule="*/5 * * * *", timezone="Europe/Paris", timeout=7)
    query = (
        Job.objects.with_effective_timeout()
        .filter(jobtable.SCHEDULED)
        .annotate(config_text=jobtable.Cast("config", jobtable.TextField()))
        .values_list(*jobtable._FIELDS)
    )
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        expected = {row[0]: tuple(row) for row in cursor.fetchall()}
    assert len(expected) == 6
    monkeypatch.setattr(jobtable, "PACED_CHUNK", 4)  # two chunks, the second one short
    paced, whole = jobtable.read_rows(jobtable.SCHEDULED, paced=True), jobtable.read_rows(jobtable.SCHEDULED)
    assert paced == whole and sorted(paced) == sorted(expected)
    for job_id, row in expected.items():
        assert jobtable.spec_from_row(paced[job_id]) == jobtable.spec_from_row(row)


@pytest.mark.skipif(not is_postgres_url(), reason="PostgreSQL only: SQLite's WAL at synchronous=NORMAL never syncs")
@pytest.mark.django_db(transaction=True)  # SET LOCAL lasts until the real commit
def test_record_batches_commit_asynchronously_on_postgresql_and_claims_do_not(alice):
    job = probe_job(alice, probe_plugin(), activate=False)
    run = services.run_now(job)
    seen = {}

    def show() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    real_update = writer_module._update_runs

    def spying_update(batch):
        seen["batch"] = show()
        real_update(batch)

    now = datetime.now(UTC)
    writer_module._update_runs = spying_update
    try:
        write_batch(Batch([], [RunFinish(_finished(run, JobRun.Status.SUCCEEDED, now), "", 0)]))
    finally:
        writer_module._update_runs = real_update
    assert seen["batch"] == "off"
    assert show() == "on", "only the batch's own transaction"
    slot = slots.slot_after(slots.to_ms(timezone.now()), job.pk, 1)
    with transaction.atomic():
        _claim(job, slot)
        assert show() == "on", "claims commit durably"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)), min_size=1, max_size=20))
def test_the_writer_s_datetime_text_is_django_s_byte_for_byte(moments):
    """The engine's raw statements must store what Django stores (a slot claimed by the engine
    and one saved through the ORM compare equal), including runs of values in one second."""
    adapt = writer_module.datetime_adapter()
    for naive in (
        moments + [m.replace(microsecond=0) for m in moments] + [m + timedelta(microseconds=1) for m in moments]
    ):
        value = naive.replace(tzinfo=UTC)
        assert adapt(value) == connection.ops.adapt_datetimefield_value(value)
