"""The engine: wires the parts and owns the loops and the start/stop sequence.

The flow reads in one direction (docs/architecture.md draws it):

    schedule.due(now) --tick--> claimer (claims in the writer thread) --won--> start_run
    --> supervisor (plugin from the registry, timeout, cancel) --end--> writer.finish_run
    --commit--> publisher (channel layer) --> browsers

Changes flow the other way only as diffs: reconcile (reader thread) -> schedule.apply.
The loop never calls the ORM and never imports plugin code.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from scheduler_app import claims, metrics, nodes, slots, wakeup
from scheduler_app.engine import upkeep
from scheduler_app.engine.access import Database
from scheduler_app.engine.claimer import Claimer
from scheduler_app.engine.counters import Counters
from scheduler_app.engine.division import Division
from scheduler_app.engine.heartbeat import Heartbeat
from scheduler_app.engine.launch import Launcher, when
from scheduler_app.engine.pacing import PacedTrigger, Pacer
from scheduler_app.engine.reconcile import Reconciler, listen
from scheduler_app.engine.registry import PluginRegistry, make_registry
from scheduler_app.engine.retries import Retries
from scheduler_app.engine.schedule import Schedule
from scheduler_app.engine.supervisor import CANCELLED, SupervisedRun, Supervisor
from scheduler_app.engine.watchdog import Watchdog
from scheduler_app.jobtable import Diff, JobSpec, JobTable
from scheduler_app.log_pipeline import Publisher, publisher_layer
from scheduler_app.models import JobRun
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import Writer

log = logging.getLogger("scheduler_app.engine")

#: How often a node looks in the database for cancel requests a lost message did not bring.
CANCEL_CHECK_SECONDS = 2.0

SCHEDULE = JobRun.Trigger.SCHEDULE.value

#: Allocations between young garbage collections once the engine runs (see ``start``).
YOUNG_COLLECTION_EVERY = 20_000
#: The longest a thread waits for the GIL while another runs Python (``sys.setswitchinterval``;
#: Python's default is 5 ms). See ``start``.
SWITCH_INTERVAL_SECONDS = 0.001


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    def __init__(self, *, embedded: bool = False, node_name: str | None = None) -> None:
        cfg = settings.SCHEDULER
        self.embedded = embedded
        self.node = node_name or nodes.make_node_name(cfg.get("NODE_NAME") or "")
        self.grace_seconds = float(cfg["GRACE_SECONDS"])
        self.reconcile_seconds = float(cfg["RECONCILE_SECONDS"])
        self._cfg = cfg
        self.counters = Counters()
        self.schedule = Schedule(self.counters)
        self.registry: PluginRegistry = make_registry()
        self.started = False
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._claimers: list[asyncio.Task[Any]] = []
        self._apscheduler: Any = None
        self._tick_job: Any = None
        self.pacer = Pacer()
        self.launcher = Launcher(self.registry)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        from channels.layers import get_channel_layer

        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        self.layer = get_channel_layer()
        self.publisher = Publisher(publisher_layer(self.layer, self.embedded, self.reconcile_seconds), loop)
        self.publisher.start()
        # Nobody can listen: the lines need no ids back (the insert returns none).
        self.writer = Writer(on_committed=self.publisher.on_committed, line_ids=self.publisher.layer is not None)
        self.writer.start()
        self.launcher.writer = self.writer
        self.db = Database(self.writer)
        self.retries = Retries(self.db, self.launcher.specs, self.counters, clock=utcnow,
                               wake_claimer=lambda: self.claimer.wake_queued())  # fmt: skip
        self.supervisor = Supervisor(self.writer, on_end=self._run_ended, before_finish=self.retries.before_finish)
        self.division = Division(self.schedule, self.supervisor, self.writer, clock=utcnow, now_ms=now_ms,
                                 membership=lambda: self.heartbeat.membership,
                                 offer=lambda due: self.claimer.offer(due))  # fmt: skip
        self.heartbeat = Heartbeat(
            self.node,
            seconds=float(self._cfg["HEARTBEAT_SECONDS"]),
            lost_after_seconds=float(self._cfg["LOST_AFTER_SECONDS"]),
            load=lambda: (len(self.supervisor.active), len(self.schedule)),
            publish=self.publisher.publish_status,
            clock=utcnow,
            on_fence=self.division.fence,
            on_members=self.division.members_changed,
            on_rename=self._renamed,
            call=self.db.heartbeat,
        )
        membership = self.heartbeat.membership
        self.claimer = Claimer(self.db, self.schedule, self.node, self.start_run, self.counters, utcnow,
                               owns=membership.mine, may_act=self.heartbeat.may_act, give_up=self.division.give_up,
                               must_lock=self.heartbeat.division_unsettled)  # fmt: skip
        self.reconciler = Reconciler(
            self.db, JobTable(), self.reconcile_seconds, self.apply, self._reload, self.counters
        )
        self.watchdog = Watchdog(self.supervisor.active.get)
        await self.heartbeat.register()
        # The members before the first slot, so this node claims its share from the start. Runs of
        # nodes that died while nobody watched are marked lost once this node may judge (after
        # LOST_AFTER_SECONDS of its own heartbeats).
        await self.heartbeat.beat()
        # A frozen process checks its lease before any run takes a step (runscheduler's loop);
        # elsewhere (embedded in daphne) a task checks it every 0.1 s.
        self._wakeup_hooked = wakeup.on_wakeup(loop, self.heartbeat.check_lease)
        await self.reconciler.once()
        self._start_tick()
        self._claimers = [
            loop.create_task(self.claimer.slots_loop(), name="claim slots"),
            loop.create_task(self.claimer.queued_loop(), name="claim queued runs"),
        ]
        retain = (float(self._cfg["RETAIN_DAYS"]), int(self._cfg["RETAIN_RUNS_PER_JOB"]))
        self._tasks = [
            loop.create_task(self.reconciler.loop(), name="reconcile"),
            loop.create_task(self._listen(), name="control listener"),
            loop.create_task(self.heartbeat.loop(), name="heartbeat"),
            *([] if self._wakeup_hooked else [loop.create_task(self.heartbeat.lease_loop(), name="lease check")]),
            loop.create_task(upkeep.checkpoint_loop(self.db), name="checkpoint"),
            loop.create_task(upkeep.retention_loop(self.db, utcnow, *retain), name="retention"),
            loop.create_task(self.watchdog.lag_loop(), name="loop lag monitor"),
            loop.create_task(self._cancel_requests_loop(), name="cancel requests"),
        ]
        self.watchdog.start()
        # The job table and the imports are long-lived: move them out of the collector's sight,
        # so full collections (which pause the loop) stay short with 100,000 jobs loaded.
        gc.collect()
        gc.freeze()
        # A run's objects (logger, context, task, records) die by reference counting, cycles are
        # rare (a failed run's traceback): a young collection every 700 allocations (Python's
        # default) walked thousands of runs in flight for nothing. Every YOUNG_COLLECTION_EVERY.
        gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
        # The writer thread gives the GIL away around every SQLite call (a statement's prepare,
        # each step, its reset, the commit) and then waits until the busy loop lets go of it:
        # up to the switch interval each time, so a claim round of a few statements took tens of
        # milliseconds of waiting at saturation (docs/performance.md, "Saturation, wave 2f").
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        self.started = True
        log.info("scheduler node %s started in %.2f s: %d active jobs%s", self.node, time.monotonic() - t0,
                 len(self.schedule), " (embedded in the web process)" if self.embedded else "")  # fmt: skip

    def _start_tick(self) -> None:
        """APScheduler runs the tick when a slot is due, paced to the rate (``engine.pacing``)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._apscheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._tick_job = self._apscheduler.add_job(
            self._tick, PacedTrigger(self.pacer, self.schedule.next_due_ms), id="tick", name="dispatch due slots"
        )
        self._apscheduler.start()

    def _wake_tick(self) -> None:
        """The schedule changed: tick earlier if a slot now comes due before the planned tick."""
        due_ms = self.schedule.next_due_ms()
        planned = self._tick_job.next_run_time if self._tick_job is not None else None
        if due_ms is not None and planned is not None and due_ms < planned.timestamp() * 1000:
            self._tick_job.modify(next_run_time=max(slots.to_datetime(due_ms), utcnow()))

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def wait_stop_requested(self) -> None:
        await self._stop_requested.wait()

    async def stop(self) -> None:
        """Stop claiming, let runs finish within GRACE_SECONDS, cancel the rest, flush, mark the node stopped."""
        if not self.started:
            return
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.request_stop()
        await stop_ticking(self._apscheduler)
        self.claimer.stop()
        await asyncio.gather(*self._claimers, return_exceptions=True)
        # The lag monitor keeps watching until the end: a plugin may block the loop on its way out.
        # The heartbeat (and the lease check) go on while runs finish: without heartbeats the
        # others would declare this node lost and take its jobs over beside its running runs.
        liveness = {"heartbeat", "lease check"}
        background = [task for task in self._tasks if task.get_name() not in {"loop lag monitor", *liveness}]
        for task in background:
            task.cancel()
        running = self.supervisor.tasks()
        if running:
            log.info("stopping: waiting up to %g s for %d running runs", self.grace_seconds, len(running))
            await asyncio.wait(running, timeout=self.grace_seconds)
        leftover = list(self.supervisor.active.values())
        why = f"cancelled: scheduler node {self.node} stopped and the grace period ({self.grace_seconds:g} s) ended"
        for run in leftover:
            self.supervisor.cancel(run, CANCELLED, why)
        if leftover:
            log.info("stopping: cancelled %d runs still going after the grace period", len(leftover))
            await asyncio.wait([r.task for r in leftover if r.task], timeout=5)
        await asyncio.gather(*background, return_exceptions=True)
        beats = [task for task in self._tasks if task.get_name() in liveness]
        for task in beats:
            task.cancel()
        await asyncio.gather(*beats, return_exceptions=True)
        wakeup.remove(asyncio.get_running_loop(), self.heartbeat.check_lease)
        await self.heartbeat.stopped()
        complete = await asyncio.get_running_loop().run_in_executor(None, self.writer.stop, 10.0)
        if not complete:
            log.error("stopped with %d run records or log lines unwritten", self.writer.pending())
        await self.publisher.stop()
        self.watchdog.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.db.close()
        self.heartbeat.close()
        self.registry.close()
        self._stopped.set()
        log.info("scheduler node %s stopped: %d runs recorded, %d log lines written", self.node,
                 self.writer.written_runs, self.writer.written_lines)  # fmt: skip

    # -- slot -> claim -> run ---------------------------------------------------------------------

    async def _tick(self) -> None:
        """APScheduler's job: hand every due slot to the claimer (cheap; never awaits)."""
        now = now_ms()
        due = self.schedule.due(now, self.heartbeat.membership.mine)
        self.pacer.ticked(now / 1000, len(due))
        # the pure schedule only counts; the totals become Prometheus counters here
        metrics.slots_counted(self.counters.coalesced, self.counters.skipped_overlap)
        if due:
            self.claimer.offer(due)
        for job_id, slot_ms in self.schedule.take_skipped():
            supervised = self.supervisor.active.get(self.schedule.running_run(job_id) or 0)
            if supervised is not None:  # (a slot skipped for a claim still in flight has no run to tell)
                supervised.context.logger.warning(
                    "slot %s skipped: this run is still going (a job never overlaps itself)",
                    when(slot_ms, self.launcher.specs.get(supervised.run.id)),
                )

    def start_run(self, run: RunSnapshot, spec: JobSpec) -> None:
        """A won claim: start it under supervision with its logger and context (``engine.launch``)."""
        note = ""
        if run.trigger == SCHEDULE and self.schedule.has_note(spec.id):
            note = self.schedule.take_note(spec.id, slots.to_ms(run.slot))
        supervised = self.launcher.supervised(run, spec, note)
        self.schedule.started(spec.id, run.id)
        self.counters.started += 1
        self.publisher.publish_status(run)
        self.supervisor.start(supervised)

    def _run_ended(self, run: SupervisedRun) -> None:
        self.launcher.ended(run.run.id)
        self.schedule.ended(run.run.job_id, run.run.id)
        self.counters.finished += 1

    def _renamed(self, node: str) -> None:
        """The heartbeat found this node's name taken (``engine.division`` applies the cluster's other verdicts)."""
        self.node = node
        self.claimer.node = node

    # -- cancellation on request (the run page, the plugin page, the admin) -----------------------

    def _cancel_requested(self, run_id: int, by: str) -> None:
        supervised = self.supervisor.active.get(run_id)
        if supervised is None or supervised.stop_status not in ("", "asked"):
            return
        self.counters.cancelled += 1
        self.supervisor.cancel(supervised, CANCELLED, f"cancelled by {by}")

    async def _cancel_requests_loop(self) -> None:
        """The fallback for a lost ``run.cancel`` message: the database flag, every few seconds."""
        while True:
            await asyncio.sleep(CANCEL_CHECK_SECONDS)
            ids = list(self.supervisor.active)
            if not ids:
                continue
            try:
                asked = await self.db.read(claims.cancel_requests, self.node, ids)
            except Exception as exc:
                log.warning("could not check for cancel requests (%s: %s)", type(exc).__name__, exc)
                continue
            for run_id, by in asked.items():
                self._cancel_requested(run_id, by)

    # -- keeping up with changes ----------------------------------------------------------------

    def apply(self, diff: Diff) -> None:
        for job_id in diff.removed:
            self.launcher.forget(job_id)
        for job_id in self.schedule.apply(diff, now_ms()):
            for run in [r for r in self.supervisor.active.values() if r.run.job_id == job_id]:
                self.supervisor.cancel(run, CANCELLED, "cancelled: the job was deleted")
        self.registry.preload((spec.package, spec.code_version) for spec in diff.upserted)
        if diff.upserted:
            self._wake_tick()
        if self.started and (diff.upserted or diff.removed):
            log.info("schedule updated: %d jobs added or changed, %d removed; %d active", len(diff.upserted),
                     len(diff.removed), len(self.schedule))  # fmt: skip

    async def _reload(self, packages: dict[str, int]) -> None:
        for package, version in packages.items():
            await self.registry.reload(package, version)

    async def _listen(self) -> None:
        await listen(self.layer, self._on_control, self.reconciler.want, self.reconcile_seconds)

    def _on_control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "jobs.changed":
            self.reconciler.want(message.get("job_ids") or [], message.get("plugin_ids") or [])
        elif kind == "run.queued":
            self.claimer.wake_queued()
        elif kind == "run.cancel":
            self._cancel_requested(int(message.get("run_id") or 0), str(message.get("by") or "someone"))
        elif kind == "plugin.reload":
            package, version = message.get("package"), message.get("code_version")
            if package:
                asyncio.get_running_loop().create_task(self._reload({package: version or 0}))
            self.reconciler.want(plugin_ids=[message["plugin_id"]] if message.get("plugin_id") else None)


async def stop_ticking(scheduler: Any) -> None:
    """Shut APScheduler down without cancelling a tick it has just started.

    Its asyncio executor cancels every job task still pending at shutdown and logs each as an
    error with a traceback ("Error running job tick"): a tick submitted in the same pass of the
    loop as the stop met that now and then. Paused, APScheduler submits no new tick; a tick
    never awaits, so the one already submitted ends within the next pass of the loop.
    """
    scheduler.pause()
    await asyncio.sleep(0)
    scheduler.shutdown(wait=False)
