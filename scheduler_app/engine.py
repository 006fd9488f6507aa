"""The scheduler engine: runs every active job on its slots, exactly once across nodes.

How it works (docs/architecture.md, "Engine" sections, says why):

- The ``Job`` table is the truth. A reader thread keeps a snapshot (``jobtable.JobTable``)
  and the loop applies its diffs: at start, on every ``jobs.changed`` / ``plugin.reload``
  notification (channel-layer group ``streams.CONTROL_GROUP``), and every
  ``RECONCILE_SECONDS`` as a fallback that also catches bulk ``update()`` calls.
- Slots are deterministic (``slots``). The engine keeps its own heap of (next slot, job);
  one APScheduler ``AsyncIOScheduler`` interval job (the tick, every ``TICK_SECONDS``) pops
  the due slots and hands them to the claimer, which claims the whole batch in one statement
  in the writer thread (``claims.claim_slots``) and starts the runs it won.
- A job never overlaps itself: a slot that comes due while the job still runs is skipped
  (locally, and via the claim's "running anywhere" check across nodes). Missed slots (loop
  stalled, node down) are coalesced: only the latest due slot runs, once.
- Each run is a task with a per-run logger (``log_pipeline``), a timeout
  (``job.effective_timeout``) and a cancellation event; every fault of the plugin becomes a
  recorded failed run, never an exception on the loop.
- Run records and log lines are written by the batched writer thread (``writer``); the loop
  never calls the ORM.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import heapq
import itertools
import logging
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connections, transaction

from scheduler_app import claims, cluster, nodes, plugin_host, retention, slots, streams, wakeup
from scheduler_app.contract import RunContext
from scheduler_app.jobtable import Diff, JobSpec, JobTable
from scheduler_app.log_pipeline import Publisher, clean_text, run_logger
from scheduler_app.models import JobRun
from scheduler_app.plugin_host import ConfigValidationError, PluginLoadError
from scheduler_app.writer import RunFinish, Writer, checkpoint

log = logging.getLogger("scheduler_app.engine")

#: How often the APScheduler tick pops due slots (bounds the added start lag).
TICK_SECONDS = 0.02
#: Most slots claimed in one claim round (a burst after downtime is spread over rounds).
MAX_CLAIM_BATCH = 2000
#: Fallback poll for queued manual runs when no notification arrives.
QUEUED_POLL_SECONDS = 0.5
#: A loop blocked this long is reported, naming the plugin on the stack.
BLOCKED_LOOP_SECONDS = 0.5
RETENTION_SECONDS = 60.0
#: A timed-out run still going this long after its cancellation is recorded and let go.
ABANDON_AFTER_SECONDS = 5.0
#: SQLite: how often the WAL is checkpointed (off the writer thread).
CHECKPOINT_SECONDS = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class RunRecord:
    """The engine's copy of a run (what ``streams.run_payload`` publishes)."""

    id: int
    job_id: int
    plugin_id: int
    user_id: int
    trigger: str
    slot: datetime
    started_at: datetime
    node: str
    status: str = JobRun.Status.RUNNING.value
    finished_at: datetime | None = None
    error: str = ""

    @property
    def pk(self) -> int:
        return self.id


@dataclass
class ActiveRun:
    record: RunRecord
    spec: JobSpec
    context: RunContext
    task: asyncio.Task[None] | None = None
    timeout_handle: asyncio.TimerHandle | None = None
    #: why the engine cancelled it: "timeout", "shutdown" or "deleted"
    cancel_reason: str = ""
    log_handler: Any = None
    #: monotonic time it was given up on (it ignored its cancellation), else 0
    abandoned: float = 0.0


@dataclass
class JobState:
    spec: JobSpec
    next_ms: int = 0
    generation: int = 0


@dataclass
class EngineStats:
    claimed: int = 0
    lost_claims: int = 0
    skipped_overlap: int = 0
    coalesced: int = 0
    #: due slots not claimed because this node could not confirm it was alive (fenced)
    skipped_fenced: int = 0
    finished: int = 0
    reconciles: int = 0
    last_reconcile_seconds: float = 0.0
    started: dict[str, int] = field(default_factory=dict)


class Engine:
    def __init__(self, *, embedded: bool = False, node_name: str | None = None) -> None:
        cfg = settings.SCHEDULER
        self.embedded = embedded
        self.node = node_name or nodes.make_node_name(cfg.get("NODE_NAME") or "")
        self.heartbeat_seconds = float(cfg["HEARTBEAT_SECONDS"])
        self.lost_after_seconds = float(cfg["LOST_AFTER_SECONDS"])
        # Fencing: this node acts (claims, runs) only while its heartbeats get through, and a
        # heartbeat's worth less than the others wait before they declare it lost.
        self.lease = cluster.Lease(self.lost_after_seconds, margin=self.heartbeat_seconds)
        #: the live members; this node claims the slots of its share of the jobs only
        self.membership = cluster.Membership(self.node)
        self._fenced = False
        self._fence_reason = ""
        self._beats_failing_since: float | None = None
        self.reconcile_seconds = float(cfg["RECONCILE_SECONDS"])
        self.grace_seconds = float(cfg["GRACE_SECONDS"])
        self.retain_days = float(cfg["RETAIN_DAYS"])
        self.retain_runs_per_job = int(cfg["RETAIN_RUNS_PER_JOB"])
        self.jobs: dict[int, JobState] = {}
        self.heap: list[tuple[int, int, int]] = []
        self.active: dict[int, ActiveRun] = {}
        self.running_jobs: dict[int, int] = {}  # job id -> run id
        self.stats = EngineStats()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.layer: Any = None
        self.publisher: Publisher | None = None
        self.writer: Writer | None = None
        self.table = JobTable()
        self.started = False
        self._due: list[tuple[JobSpec, int]] = []
        self._generations = itertools.count(1)
        self._claiming: set[int] = set()  # jobs with a slot waiting for (or in) a claim
        self._due_ready: asyncio.Event | None = None
        self._queued_ready: asyncio.Event | None = None
        self._reconcile_ready: asyncio.Event | None = None
        self._pending_scope: tuple[set[int], set[int]] | None = None
        self._full_reconcile_due = False
        self._stop_requested: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._stopping = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._claimers: list[asyncio.Task[Any]] = []
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobscheduler-reader")
        # Heartbeats and loss detection have a thread (and connection) of their own: queued behind
        # the writer's claims and flushes, a heartbeat of a busy node would arrive late, and the
        # node would fence itself (or be declared lost) for being busy.
        self._beats = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobscheduler-heartbeat")
        self._apscheduler: Any = None
        self._loop_beat = time.monotonic()
        self._loop_thread_id = 0
        self._watchdog_stop = threading.Event()
        self._blocked_report: tuple[str, int | None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger
        from channels.layers import get_channel_layer

        t0 = time.monotonic()
        self.loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._due_ready = asyncio.Event()
        self._queued_ready = asyncio.Event()
        self._reconcile_ready = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self.layer = get_channel_layer()
        self._warn_about_layer()
        self.publisher = Publisher(None if self._nobody_can_listen() else self.layer, self.loop)
        self.publisher.start()
        self.writer = Writer(on_committed=self.publisher.on_committed)
        self.writer.start()
        sent = time.monotonic()
        await self._liveness(nodes.register, self.node, utcnow())
        self.lease.renewed(sent)
        # The members before the first slot, so this node claims its share from the start. Runs of
        # nodes that died while nobody watched are marked lost once this node may judge (after
        # LOST_AFTER_SECONDS of its own heartbeats).
        await self._beat()
        # A frozen process checks its lease before any run takes a step (runscheduler's loop).
        wakeup.on_wakeup(self.loop, self._check_lease)
        diff = await self._read(self.table.full)
        self._apply(diff, initial=True)
        self._apscheduler = AsyncIOScheduler(
            event_loop=self.loop,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._apscheduler.add_job(
            self._tick, IntervalTrigger(seconds=TICK_SECONDS), id="tick", name="dispatch due slots"
        )
        self._apscheduler.start()
        self._claimers = [
            self.loop.create_task(self._claim_loop(), name="claim slots"),
            self.loop.create_task(self._queued_loop(), name="claim queued runs"),
        ]
        self._tasks = [
            self.loop.create_task(self._reconcile_loop(), name="reconcile"),
            self.loop.create_task(self._control_loop(), name="control listener"),
            self.loop.create_task(self._heartbeat_loop(), name="heartbeat"),
            self.loop.create_task(self._checkpoint_loop(), name="checkpoint"),
            self.loop.create_task(self._retention_loop(), name="retention"),
            self.loop.create_task(self._lag_loop(), name="loop lag monitor"),
        ]
        threading.Thread(target=self._watchdog, name="jobscheduler-watchdog", daemon=True).start()
        # The job table and the imports are long-lived: move them out of the collector's sight,
        # so full collections (which pause the loop) stay short with 100,000 jobs loaded.
        gc.collect()
        gc.freeze()
        self.started = True
        log.info(
            "scheduler node %s started in %.2f s: %d active jobs%s",
            self.node,
            time.monotonic() - t0,
            len(self.jobs),
            " (embedded in the web process)" if self.embedded else "",
        )

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def wait_stop_requested(self) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()

    async def stop(self) -> None:
        """Stop claiming, let runs finish within GRACE_SECONDS, cancel the rest, flush, mark the node stopped."""
        if not self.started:
            return
        if self._stopping:
            assert self._stopped is not None
            await self._stopped.wait()
            return
        self._stopping = True
        self.request_stop()
        if self._apscheduler is not None:
            self._apscheduler.shutdown(wait=False)
        # Claimers finish their current round (a won claim always gets a run task).
        assert self._due_ready and self._queued_ready
        self._due_ready.set()
        self._queued_ready.set()
        await asyncio.gather(*self._claimers, return_exceptions=True)
        # The lag monitor keeps watching until the end: a plugin may block the loop on its way out.
        # The heartbeat goes on while runs finish: without it the others would declare this node
        # lost after LOST_AFTER_SECONDS and take its jobs over beside its running runs.
        keep = {"loop lag monitor", "heartbeat"}
        background = [task for task in self._tasks if task.get_name() not in keep]
        for task in background:
            task.cancel()
        running = [a.task for a in self.active.values() if a.task is not None]
        if running:
            log.info("stopping: waiting up to %g s for %d running runs", self.grace_seconds, len(running))
            await asyncio.wait(running, timeout=self.grace_seconds)
        leftover = [a for a in self.active.values() if a.task is not None and not a.task.done()]
        for active in leftover:
            self._cancel(active, "shutdown")
        if leftover:
            log.info("stopping: cancelled %d runs still going after the grace period", len(leftover))
            await asyncio.wait([a.task for a in leftover if a.task], timeout=5)
        await asyncio.gather(*background, return_exceptions=True)
        for task in self._tasks:
            if task.get_name() == "heartbeat":
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # No heartbeats from here on, and nothing left to fence: nothing more is claimed or run.
        self._fenced, self._fence_reason = True, "stopped"
        if self.loop is not None:
            wakeup.remove(self.loop, self._check_lease)
        assert self.writer is not None
        try:
            await self._write(nodes.mark_stopped, self.node, utcnow())
        except Exception as exc:
            log.warning("could not mark node %s stopped: %s", self.node, exc)
        complete = await asyncio.get_running_loop().run_in_executor(None, self.writer.stop, 10.0)
        if not complete:
            log.error("stopped with %d run records or log lines unwritten", self.writer.pending())
        if self.publisher is not None:
            await self.publisher.stop()
        self._watchdog_stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._reader.submit(connections.close_all)
        self._reader.shutdown(wait=True)
        self._beats.submit(connections.close_all)
        self._beats.shutdown(wait=True)
        if self._stopped is not None:
            self._stopped.set()
        log.info(
            "scheduler node %s stopped: %d runs recorded, %d log lines written",
            self.node,
            self.writer.written_runs,
            self.writer.written_lines,
        )

    def _nobody_can_listen(self) -> bool:
        """The in-memory layer in a scheduler-only process: no browser can ever be in its groups."""
        from channels.layers import InMemoryChannelLayer

        return isinstance(self.layer, InMemoryChannelLayer) and not self.embedded

    def _warn_about_layer(self) -> None:
        from channels.layers import InMemoryChannelLayer

        if self.layer is None:
            log.warning("no channel layer configured: log lines are stored but not streamed")
        elif isinstance(self.layer, InMemoryChannelLayer) and not self.embedded:
            log.warning(
                "REDIS_URL is not set: this scheduler runs in its own process with the in-memory channel layer. "
                "Log lines are stored, but they will NOT reach browsers served by another process, and change "
                "notifications from the web process will not arrive (changes apply on the next reconcile, every "
                "%g s). Set REDIS_URL=redis://host:6379/0 for the web and the scheduler processes.",
                self.reconcile_seconds,
            )

    # -- database access, off the loop ----------------------------------------------------

    async def _write(self, fn: Any, *args: Any) -> Any:
        assert self.writer is not None
        return await asyncio.wrap_future(self.writer.call(fn, *args))

    async def _liveness(self, fn: Any, *args: Any) -> Any:
        """Heartbeats, registrations and loss detection, in their own thread."""
        assert self.loop is not None
        return await self.loop.run_in_executor(self._beats, _in_thread(_atomic(fn)), *args)

    async def _read(self, fn: Any, *args: Any) -> Any:
        assert self.loop is not None
        return await self.loop.run_in_executor(self._reader, _in_thread(fn), *args)

    # -- schedule -----------------------------------------------------------------------------

    def _apply(self, diff: Diff, initial: bool = False) -> None:
        now = now_ms()
        for spec in diff.upserted:
            state = self.jobs.get(spec.id)
            if state is None:
                state = JobState(spec=spec)
                self.jobs[spec.id] = state
                latest = slots.slot_at_or_before(now, spec.id, spec.interval)
                # Coalesce downtime: the latest slot that was due since the job last changed
                # runs now (the claim loses if some node already ran it); older ones never.
                first = latest if latest >= spec.updated_ms else latest + spec.interval * 1000
                self._schedule(state, first)
            else:
                old = state.spec
                state.spec = spec
                if old.interval != spec.interval:
                    self._schedule(state, slots.slot_after(now, spec.id, spec.interval))
        for job_id in diff.removed:
            self.jobs.pop(job_id, None)
        for job_id in diff.deleted:
            run_id = self.running_jobs.get(job_id)
            if run_id is not None and run_id in self.active:
                self._cancel(self.active[run_id], "deleted")
        if not initial and (diff.upserted or diff.removed):
            log.info(
                "schedule updated: %d jobs added or changed, %d removed; %d active",
                len(diff.upserted),
                len(diff.removed),
                len(self.jobs),
            )

    def _schedule(self, state: JobState, due_ms: int) -> None:
        # Generations are unique across states: a job removed and added again must not match
        # the heap entries its previous state left behind.
        state.generation = next(self._generations)
        state.next_ms = due_ms
        heapq.heappush(self.heap, (due_ms, state.spec.id, state.generation))

    async def _tick(self) -> None:
        """APScheduler's job: move every due slot to the claimer (cheap; never awaits)."""
        now = now_ms()
        heap = self.heap
        due = self._due
        mine = self.membership.mine
        while heap and heap[0][0] <= now:
            due_ms, job_id, generation = heapq.heappop(heap)
            state = self.jobs.get(job_id)
            if state is None or state.generation != generation:
                continue  # removed or rescheduled since
            spec = state.spec
            latest = slots.slot_at_or_before(now, job_id, spec.interval)
            if latest > due_ms:
                self.stats.coalesced += 1
            slot_ms = max(latest, due_ms)
            state.next_ms = slot_ms + spec.interval * 1000
            heapq.heappush(heap, (state.next_ms, job_id, generation))
            if not mine(job_id):
                continue  # another member's share (the claim would settle it anyway, at a cost)
            if job_id in self.running_jobs or job_id in self._claiming:
                # Still running (or its last slot's claim is still in flight): skip this slot.
                self.stats.skipped_overlap += 1
                continue
            self._claiming.add(job_id)
            due.append((spec, slot_ms))
        if due and self._due_ready is not None:
            self._due_ready.set()

    async def _claim_loop(self) -> None:
        assert self._due_ready is not None
        while True:
            await self._due_ready.wait()
            self._due_ready.clear()
            if self._stopping:
                return
            batch, self._due[:] = self._due[:MAX_CLAIM_BATCH], self._due[MAX_CLAIM_BATCH:]
            if self._due:
                self._due_ready.set()
            for spec, _slot in batch:
                self._claiming.discard(spec.id)
            batch = [(spec, slot) for spec, slot in batch if spec.id not in self.running_jobs]
            if not batch:
                continue
            if not self._may_act():
                self.stats.skipped_fenced += len(batch)
                continue
            now = utcnow()
            node = self.node
            wanted = [claims.SlotClaim(spec.id, slot_ms, spec.package) for spec, slot_ms in batch]
            in_flight = {spec.id for spec, _slot in batch}
            self._claiming |= in_flight
            try:
                won = await self._write(claims.claim_slots, node, wanted, now)
            except Exception as exc:
                self._claiming -= in_flight
                log.warning(
                    "could not claim %d due slots (%s: %s); they are skipped", len(batch), type(exc).__name__, exc
                )
                continue
            self._claiming -= in_flight
            self.stats.lost_claims += len(batch) - len(won)
            if won and (node != self.node or not self._may_act()):
                # Fenced (or rejoined under a new name) while the claim was on its way: start nothing.
                self._give_up_claims(
                    [(won[(spec.id, slot)], spec, slot) for spec, slot in batch if (spec.id, slot) in won],
                    node,
                    JobRun.Trigger.SCHEDULE.value,
                )
                continue
            for spec, slot_ms in batch:
                run_id = won.get((spec.id, slot_ms))
                if run_id is not None:
                    record = RunRecord(
                        id=run_id,
                        job_id=spec.id,
                        plugin_id=spec.plugin_id,
                        user_id=spec.user_id,
                        trigger=JobRun.Trigger.SCHEDULE.value,
                        slot=slots.to_datetime(slot_ms),
                        started_at=now,
                        node=node,
                    )
                    self._start_run(record, spec)

    async def _queued_loop(self) -> None:
        """Claim manual runs: woken by ``run.queued``, with a fast poll as the fallback."""
        assert self._queued_ready is not None
        while True:
            try:
                await asyncio.wait_for(self._queued_ready.wait(), QUEUED_POLL_SECONDS)
            except TimeoutError:
                pass
            self._queued_ready.clear()
            if self._stopping:
                return
            if not self._may_act():
                continue
            node = self.node
            try:
                # "Run now" follows the division too: the owner of the job claims it.
                ids = [
                    run_id for run_id, job_id in await self._read(claims.queued_runs) if self.membership.mine(job_id)
                ]
                if not ids:
                    continue
                now = utcnow()
                won = await self._write(claims.claim_queued, node, ids, set(self.running_jobs), now)
            except Exception as exc:
                log.warning("could not claim queued runs (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(1)
                continue
            if won and (node != self.node or not self._may_act()):
                self._give_up_claims(
                    [(c.run_id, c.spec, slots.to_ms(c.slot)) for c in won], node, JobRun.Trigger.MANUAL.value
                )
                continue
            for claim in won:
                record = RunRecord(
                    id=claim.run_id,
                    job_id=claim.spec.id,
                    plugin_id=claim.spec.plugin_id,
                    user_id=claim.spec.user_id,
                    trigger=JobRun.Trigger.MANUAL.value,
                    slot=claim.slot,
                    started_at=claim.started_at,
                    node=node,
                )
                self._start_run(record, claim.spec)

    # -- running one job ----------------------------------------------------------------------

    def _start_run(self, record: RunRecord, spec: JobSpec) -> None:
        assert self.loop is not None and self.writer is not None and self.publisher is not None
        logger, handler = run_logger(
            self.writer,
            run_id=record.id,
            job_id=spec.id,
            plugin_id=spec.plugin_id,
            user_id=spec.user_id,
            package=spec.package,
        )
        context = RunContext(
            logger=logger,
            run_id=record.id,
            job_id=spec.id,
            user_id=spec.user_id,
            username=spec.username,
            plugin_id=spec.plugin_id,
            package=spec.package,
            slot=record.slot,
            trigger=record.trigger,
            cancelled=asyncio.Event(),
        )
        # started_at is when the run really starts (after the claim's round trip), not when the
        # claim was asked for: the recorded slot-to-start lag includes the claim.
        record.started_at = utcnow()
        active = ActiveRun(record=record, spec=spec, context=context, log_handler=handler)
        self.active[record.id] = active
        self.running_jobs[spec.id] = record.id
        self.stats.claimed += 1
        self.publisher.publish_status(record)
        active.task = self.loop.create_task(self._execute(active), name=f"run {record.id} of {spec.package}")

    async def _execute(self, active: ActiveRun) -> None:
        spec, context = active.spec, active.context
        status, error, trace = JobRun.Status.SUCCEEDED.value, "", ""
        try:
            if not spec.enabled:
                raise _RunRefused(f"the plugin {spec.package} is disabled")
            try:
                plugin = plugin_host.get_plugin(spec.package, spec.code_version)
            except PluginLoadError as exc:
                raise _RunRefused(f"the plugin's code does not load: {exc}") from exc
            try:
                config = plugin.validate(spec.config)
            except ConfigValidationError as exc:
                raise _RunRefused(
                    f"the stored config is no longer valid for {spec.package}: {exc}; edit and save the job"
                ) from exc
            assert self.loop is not None
            active.timeout_handle = self.loop.call_later(spec.timeout, self._cancel, active, "timeout")
            await plugin.run(config=config, context=context)
        except asyncio.CancelledError:
            pass  # the reason is in active.cancel_reason, checked below
        except _RunRefused as exc:
            status, error = JobRun.Status.FAILED.value, str(exc)
            cause = exc.__cause__
            trace = "".join(traceback.format_exception(cause)) if cause is not None else ""
        except Exception as exc:
            status, error, trace = JobRun.Status.FAILED.value, _describe(exc), traceback.format_exc()
        except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:  # a plugin must not end the process
            status, error, trace = JobRun.Status.FAILED.value, _describe(exc), traceback.format_exc()
        finally:
            if active.timeout_handle is not None:
                active.timeout_handle.cancel()
        # A plugin that swallowed the cancellation still ran into its timeout / the shutdown.
        if active.cancel_reason == "timeout":
            status = JobRun.Status.TIMED_OUT.value
            error = f"timed out after {spec.timeout} s (the job's timeout): cancelled"
        elif active.cancel_reason == "shutdown":
            status = JobRun.Status.CANCELLED.value
            error = (
                f"cancelled: scheduler node {self.node} stopped and the grace period ({self.grace_seconds:g} s) ended"
            )
        elif active.cancel_reason == "deleted":
            status = JobRun.Status.CANCELLED.value
            error = "cancelled: the job was deleted"
        elif active.cancel_reason == "fenced":
            status = JobRun.Status.CANCELLED.value
            error = (
                f"cancelled: scheduler node {active.record.node} could not confirm it was alive "
                f"({self._fence_reason}); another node may run the job"
            )
        if active.abandoned:
            log.warning("run %s of %s ended %.0f s after it was abandoned", active.record.id, spec.package,
                        time.monotonic() - active.abandoned)  # fmt: skip
            return
        if error:
            context.logger.error("run %s: %s", status.replace("_", " "), error)
        self._finish(active, status, error, trace)

    def _cancel(self, active: ActiveRun, reason: str) -> None:
        if active.cancel_reason or active.task is None or active.task.done():
            return
        active.cancel_reason = reason
        active.context.cancelled.set()
        active.task.cancel()
        if reason == "timeout" and self.loop is not None:
            self.loop.call_later(ABANDON_AFTER_SECONDS, self._abandon, active)

    def _abandon(self, active: ActiveRun) -> None:
        """A run that swallowed its cancellation: record it timed out and free the job anyway.

        The coroutine cannot be killed; it goes on in the background, but the job is no longer
        blocked by it and its record is final."""
        if active.task is None or active.task.done() or active.record.id not in self.active:
            return
        active.abandoned = time.monotonic()
        error = (
            f"timed out after {active.spec.timeout} s and did not stop when cancelled "
            f"(the plugin swallows asyncio.CancelledError): abandoned"
        )
        log.warning("run %s of %s: %s", active.record.id, active.spec.package, error)
        active.context.logger.error("run timed out: %s", error)
        self._finish(active, JobRun.Status.TIMED_OUT.value, error, "")

    def _finish(self, active: ActiveRun, status: str, error: str, trace: str) -> None:
        assert self.writer is not None
        record = active.record
        record.status = status
        record.finished_at = utcnow()
        record.error = clean_text(error)
        self.active.pop(record.id, None)
        if self.running_jobs.get(record.job_id) == record.id:
            del self.running_jobs[record.job_id]
        self.stats.finished += 1
        self.writer.finish_run(
            RunFinish(
                run_id=record.id,
                status=status,
                started_at=record.started_at,
                finished_at=record.finished_at,
                error=record.error,
                traceback=clean_text(trace),
                log_count=active.log_handler.count if active.log_handler else 0,
                record=record,
                node=record.node,
            )
        )

    # -- keeping up with changes -----------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        assert self._reconcile_ready is not None
        interval = self.reconcile_seconds
        while True:
            try:
                await asyncio.wait_for(self._reconcile_ready.wait(), interval)
                full = self._full_reconcile_due
            except TimeoutError:
                full = True
            self._reconcile_ready.clear()
            scope, self._pending_scope = self._pending_scope, None
            self._full_reconcile_due = False
            t0 = time.monotonic()
            try:
                if full or scope is None:
                    diff = await self._read(self.table.full)
                    # A reconcile of many jobs costs CPU: never spend more than ~20 % on it.
                    elapsed = time.monotonic() - t0
                    interval = max(self.reconcile_seconds, elapsed * 5)
                    self.stats.last_reconcile_seconds = elapsed
                else:
                    diff = await self._read(self.table.partial, scope[0], scope[1])
            except Exception as exc:
                log.warning("reconcile failed (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(1)
                continue
            self.stats.reconciles += 1
            if diff.reloaded:
                await self._reload(diff.reloaded)
            self._apply(diff)

    def _want_reconcile(self, job_ids: list[int] | None = None, plugin_ids: list[int] | None = None) -> None:
        if not job_ids and not plugin_ids:
            self._full_reconcile_due = True
        else:
            jobs, plugins = self._pending_scope or (set(), set())
            self._pending_scope = (jobs | set(job_ids or ()), plugins | set(plugin_ids or ()))
        assert self._reconcile_ready is not None
        self._reconcile_ready.set()

    async def _reload(self, packages: dict[str, int]) -> None:
        """Re-import changed plugins in the reader thread (never an import on the loop).

        ``plugin_host.get_plugin(package, code_version)`` reloads when the version is newer
        than the loaded code; a failed reload is logged there and the old code keeps running.
        """
        for package, version in packages.items():
            try:
                await self._read(plugin_host.get_plugin, package, version)
            except Exception as exc:
                log.error("plugin %s (code version %s) does not load: %s", package, version, exc)
            else:
                log.info("plugin %s now runs code version %s", package, version)

    async def _control_loop(self) -> None:
        if self.layer is None:
            return
        failing = False
        while True:
            channel = None
            try:
                channel = await self.layer.new_channel()
                await self.layer.group_add(streams.CONTROL_GROUP, channel)
                if failing:
                    log.warning("listening to change notifications again; reconciling")
                    failing = False
                    self._want_reconcile()
                while True:
                    message = await self.layer.receive(channel)
                    self._on_control(message)
            except asyncio.CancelledError:
                if channel is not None:
                    try:
                        await asyncio.wait_for(self.layer.group_discard(streams.CONTROL_GROUP, channel), 1)
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
                        self.reconcile_seconds,
                    )
                await asyncio.sleep(2)

    def _on_control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "jobs.changed":
            self._want_reconcile(message.get("job_ids") or [], message.get("plugin_ids") or [])
        elif kind == "run.queued":
            assert self._queued_ready is not None
            self._queued_ready.set()
        elif kind == "plugin.reload":
            package, version = message.get("package"), message.get("code_version")
            if package:
                assert self.loop is not None
                self.loop.create_task(self._reload({package: version or 0}))
            self._want_reconcile(plugin_ids=[message["plugin_id"]] if message.get("plugin_id") else None)

    # -- nodes, retention, loop health -----------------------------------------------------

    def _mark_lost(self) -> list[Any]:
        return nodes.mark_lost_runs(self.node, utcnow(), self.lost_after_seconds)

    async def _checkpoint_loop(self) -> None:
        """SQLite only: checkpoint the WAL from the reader thread (the writer's are switched off)."""
        if connections["default"].vendor != "sqlite":
            return
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await self._read(checkpoint)
            except Exception as exc:
                log.debug("checkpoint failed: %s", exc)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._beats_failing_since is None:
                    self._beats_failing_since = time.monotonic()
                    log.warning(
                        "heartbeat failed (%s: %s); this node stops claiming and cancels its runs if none gets "
                        "through within %.1f s",
                        type(exc).__name__,
                        exc,
                        max(0.0, self.lease.expires_in(time.monotonic())),
                    )

    async def _beat(self) -> None:
        """One heartbeat: renew the lease, learn the members, declare silent nodes lost."""
        sent, node = time.monotonic(), self.node
        beat = await self._liveness(
            nodes.heartbeat, node, utcnow(), len(self.active), len(self.jobs), self.lost_after_seconds
        )
        if self._beats_failing_since is not None:
            log.warning("heartbeats get through again after %.1f s", time.monotonic() - self._beats_failing_since)
            self._beats_failing_since = None
        if not beat.alive:
            await self._rejoin(node)
            return
        self.lease.renewed(sent)
        if self._fenced:
            self._fenced = False
            log.warning("node %s: heartbeats get through again; claiming again", node)
        before = copy.copy(self.membership)
        if self.membership.update(beat.members):
            self._rebalance(before)
        if self.lease.may_judge(time.monotonic()):
            lost = await self._liveness(self._mark_lost)
            for run in lost:
                log.warning("run %s of job %s marked lost: %s", run.id, run.job_id, run.error)
                assert self.publisher is not None
                self.publisher.publish_status(run)

    # -- fencing and the division of jobs ------------------------------------------------------

    def _may_act(self) -> bool:
        self._check_lease()
        return not self._fenced

    def _check_lease(self) -> None:
        """Cancel every run the moment this node can no longer be sure the others count it alive.

        Runs after every wake-up of runscheduler's loop (``wakeup``) and every 0.1 s otherwise."""
        if not self._fenced and not self.lease.valid(time.monotonic()):
            silent = time.monotonic() - (self.lease.renewed_at or 0.0)
            self._fence(f"no heartbeat got through for {silent:.1f} s: paused, overloaded or cut off from the database")

    def _fence(self, reason: str) -> None:
        self._fenced = True
        self._fence_reason = reason
        going = [a for a in self.active.values() if a.task is not None and not a.task.done()]
        log.warning(
            "node %s fenced (%s): cancelling its %d running runs and claiming nothing until a heartbeat gets through",
            self.node,
            reason,
            len(going),
        )
        for active in going:
            self._cancel(active, "fenced")

    async def _rejoin(self, old: str) -> None:
        """Another node declared this one lost (its runs are marked lost): cancel what still runs
        and come back as a new node, so nothing of the old one is ever written over."""
        if not self._fenced or self.active:
            self._fence(f"another node declared it lost after {self.lost_after_seconds:g} s without a heartbeat")
        new = nodes.make_node_name(old.rsplit(":", 2)[0])
        sent = time.monotonic()
        await self._liveness(nodes.register, new, utcnow())
        self.node = new
        self.lease.reset()
        self.lease.renewed(sent)
        self._fenced = False
        before = copy.copy(self.membership)
        self.membership.rename(new)
        log.warning(
            "node %s was declared lost by another node (paused or cut off for over %g s); its runs were cancelled "
            "and marked lost; rejoined as %s",
            old,
            self.lost_after_seconds,
            new,
        )
        self._rebalance(before)

    def _rebalance(self, before: cluster.Membership) -> None:
        """The members changed: catch up the latest slot of each job this node takes over.

        The previous owner may have gone (its slot due meanwhile would be missed) or still be
        here (the claim finds the slot taken). A job saved after its latest slot waits for the next."""
        now = now_ms()
        mine = taken = 0
        for job_id, state in self.jobs.items():
            if not self.membership.mine(job_id):
                continue
            mine += 1
            if before.mine(job_id) and before.me == self.membership.me:
                continue
            taken += 1
            if job_id in self.running_jobs or job_id in self._claiming:
                continue
            spec = state.spec
            latest = slots.slot_at_or_before(now, job_id, spec.interval)
            if latest >= spec.updated_ms:
                self._claiming.add(job_id)
                self._due.append((spec, latest))
        log.info(
            "members: %s; node %s runs %d of %d jobs (%d taken over)",
            ", ".join(self.membership.members),
            self.membership.me,
            mine,
            len(self.jobs),
            taken,
        )
        if self._due and self._due_ready is not None:
            self._due_ready.set()

    def _give_up_claims(self, won: list[tuple[int, JobSpec, int]], node: str, trigger: str) -> None:
        """Claims won just before this node was fenced: record them cancelled, never start them."""
        assert self.writer is not None
        now = utcnow()
        error = f"cancelled: scheduler node {node} was fenced before the run could start ({self._fence_reason})"
        for run_id, spec, slot_ms in won:
            record = RunRecord(
                id=run_id,
                job_id=spec.id,
                plugin_id=spec.plugin_id,
                user_id=spec.user_id,
                trigger=trigger,
                slot=slots.to_datetime(slot_ms),
                started_at=now,
                node=node,
                status=JobRun.Status.CANCELLED.value,
                finished_at=now,
                error=error,
            )
            self.writer.finish_run(RunFinish(run_id, record.status, now, now, error, "", 0, record=record, node=node))

    async def _retention_loop(self) -> None:
        await asyncio.sleep(5)
        while True:
            deleted = 0
            try:
                while True:
                    ids = await self._read(retention.prunable, utcnow(), self.retain_days, self.retain_runs_per_job)
                    if not ids:
                        break
                    n = await self._write(retention.delete_runs, ids)
                    deleted += n
                    if n == 0:  # found but gone meanwhile (another node pruned them): done for now
                        break
                    await asyncio.sleep(0.2)  # let claims and log writes through between batches
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("retention failed (%s: %s)", type(exc).__name__, exc)
            if deleted:
                log.info("retention: deleted %d old runs with their log lines", deleted)
            await asyncio.sleep(RETENTION_SECONDS)

    async def _lag_loop(self) -> None:
        """Beat for the watchdog thread, and report when the loop was blocked."""
        period = 0.1
        while True:
            t0 = time.monotonic()
            self._loop_beat = t0
            self._check_lease()
            await asyncio.sleep(period)
            lag = time.monotonic() - t0 - period
            self._loop_beat = time.monotonic()
            if lag >= BLOCKED_LOOP_SECONDS:
                culprit, self._blocked_report = self._blocked_report, None
                where = culprit[0] if culprit else "no plugin on the stack"
                log.warning("the event loop was blocked for %.2f s (%s)", lag, where)

    def _watchdog(self) -> None:
        """Thread: when the loop stops beating, name the plugin whose code is on its stack."""
        reported_for = 0.0
        while not self._watchdog_stop.wait(0.1):
            beat = self._loop_beat
            if time.monotonic() - beat < BLOCKED_LOOP_SECONDS or beat == reported_for:
                continue
            reported_for = beat
            found = self._find_blocker()
            self._blocked_report = (found[0], found[1].record.id) if found else None
            if found:
                where, active = found
                log.warning("event loop blocked for over %.1f s by %s", BLOCKED_LOOP_SECONDS, where)
                # The run's own log says so too (the handler is thread-safe; the loop is stuck).
                active.context.logger.warning(
                    "this run is blocking the scheduler's event loop (over %.1f s so far, at %s): use await or "
                    "asyncio.to_thread for blocking work",
                    BLOCKED_LOOP_SECONDS,
                    where.rpartition(" at ")[2],
                )
            else:
                log.warning("event loop blocked for over %.1f s (not by plugin code)", BLOCKED_LOOP_SECONDS)

    def _find_blocker(self) -> tuple[str, ActiveRun] | None:
        """Which run is on the loop thread's stack: the loop's current task names it (runs are
        tasks called "run <id> of <package>"); the plugin's innermost frame says where."""
        frame = sys._current_frames().get(self._loop_thread_id)
        if frame is None or self.loop is None:
            return None
        active: ActiveRun | None = None
        try:
            task = asyncio.current_task(self.loop)  # a dict read: safe from this thread
        except RuntimeError:
            task = None
        if task is not None and task.get_name().startswith("run "):
            with contextlib.suppress(ValueError, IndexError):
                active = self.active.get(int(task.get_name().split()[1]))
        if active is None:
            return None
        folder = active.spec.package.rpartition(".")[0].rpartition(".")[0] or active.spec.package
        f: Any = frame
        where = "an unknown place"
        while f is not None:
            module = f.f_globals.get("__name__", "")
            if module == folder or module.startswith(folder + "."):
                where = f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
                break
            f = f.f_back
        return f"plugin {active.spec.package} (run {active.record.id}, job {active.spec.id}) at {where}", active


class _RunRefused(Exception):
    """The run could not start (plugin disabled or not loadable, stored config invalid)."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _atomic(fn: Any) -> Any:
    def call(*args: Any) -> Any:
        with transaction.atomic():
            return fn(*args)

    return call


def _in_thread(fn: Any) -> Any:
    """Wrap a reader-thread function: a dead connection is dropped so the next call reconnects."""

    def call(*args: Any) -> Any:
        from django.db import InterfaceError, OperationalError, connection

        try:
            return fn(*args)
        except (OperationalError, InterfaceError):
            try:
                connection.close()
            except Exception:
                pass
            raise

    return call
