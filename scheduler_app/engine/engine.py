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
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from pydantic import BaseModel

from scheduler_app import claims, metrics, nodes, schedules, slots, wakeup
from scheduler_app.cluster import Membership
from scheduler_app.contract import RunContext
from scheduler_app.engine import upkeep
from scheduler_app.engine.access import Database
from scheduler_app.engine.claimer import Claimer
from scheduler_app.engine.counters import Counters
from scheduler_app.engine.heartbeat import Heartbeat
from scheduler_app.engine.pacing import PacedTrigger, Pacer
from scheduler_app.engine.reconcile import Reconciler, listen
from scheduler_app.engine.registry import PluginRegistry, make_registry
from scheduler_app.engine.schedule import Schedule
from scheduler_app.engine.supervisor import CANCELLED, Outcome, RunRefused, SupervisedRun, Supervisor
from scheduler_app.engine.watchdog import Watchdog
from scheduler_app.jobtable import Diff, JobSpec, JobTable
from scheduler_app.log_pipeline import Publisher, run_logger
from scheduler_app.models import JobRun
from scheduler_app.plugin_host import ConfigValidationError, LoadedPlugin, PluginLoadError, immutable_config
from scheduler_app.streams import RunSnapshot
from scheduler_app.writer import RunFinish, Writer

log = logging.getLogger("scheduler_app.engine")

#: How often a node looks in the database for cancel requests a lost message did not bring.
CANCEL_CHECK_SECONDS = 2.0

SCHEDULE, RETRY = JobRun.Trigger.SCHEDULE.value, JobRun.Trigger.RETRY.value


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _when(epoch_ms: int, spec: JobSpec | None) -> str:
    """A slot as its owner reads it: in the job's time zone."""
    zone = schedules.zone(spec.timing.timezone) if spec is not None and spec.timing is not None else UTC
    return slots.to_datetime(epoch_ms).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


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
        #: run id -> the spec it runs (for retries and the lines that name its time zone)
        self._specs: dict[int, JobSpec] = {}
        #: job id -> (spec, plugin, config) of a config runs may share (``immutable_config``):
        #: validated once per spec and code, not per run (decrypting secrets and a hook call)
        self._configs: dict[int, tuple[JobSpec, LoadedPlugin, BaseModel]] = {}

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        from channels.layers import get_channel_layer

        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        self.layer = get_channel_layer()
        self._warn_about_layer()
        self.publisher = Publisher(None if self._nobody_can_listen() else self.layer, loop)
        self.publisher.start()
        # Nobody can listen: the lines need no ids back (the insert returns none).
        self.writer = Writer(on_committed=self.publisher.on_committed, line_ids=self.publisher.layer is not None)
        self.writer.start()
        self.db = Database(self.writer)
        self.supervisor = Supervisor(self.writer, on_end=self._run_ended, before_finish=self._before_finish)
        self.heartbeat = Heartbeat(
            self.node,
            seconds=float(self._cfg["HEARTBEAT_SECONDS"]),
            lost_after_seconds=float(self._cfg["LOST_AFTER_SECONDS"]),
            load=lambda: (len(self.supervisor.active), len(self.schedule)),
            publish=self.publisher.publish_status,
            clock=utcnow,
            on_fence=self._fence,
            on_members=self._members_changed,
            on_rename=self._renamed,
        )
        membership = self.heartbeat.membership
        self.claimer = Claimer(self.db, self.schedule, self.node, self.start_run, self.counters, utcnow,
                               owns=membership.mine, may_act=self.heartbeat.may_act, give_up=self._give_up,
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
        self._apscheduler.shutdown(wait=False)
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
                spec = self._specs.get(supervised.run.id)
                supervised.context.logger.warning(
                    "slot %s skipped: this run is still going (a job never overlaps itself)",
                    _when(slot_ms, spec),
                )

    def start_run(self, run: RunSnapshot, spec: JobSpec) -> None:
        """A won claim: give the run its logger and context and start it under supervision."""
        logger, handler = run_logger(self.writer, run_id=run.id, job_id=spec.id, plugin_id=spec.plugin_id,
                                     user_id=spec.user_id, package=spec.package)  # fmt: skip
        context = RunContext(logger=logger, run_id=run.id, job_id=spec.id, user_id=spec.user_id,
                             username=spec.username, plugin_id=spec.plugin_id, package=spec.package, slot=run.slot,
                             trigger=run.trigger, attempt=run.attempt, cancelled=asyncio.Event())  # fmt: skip
        if run.trigger == SCHEDULE:
            note = self.schedule.take_note(spec.id, slots.to_ms(run.slot)) if self.schedule.has_note(spec.id) else ""
            if note:
                logger.warning(note)
        elif run.trigger == RETRY:
            logger.info("retry: attempt %d of %d for the slot %s", run.attempt, spec.max_retries + 1,
                        _when(slots.to_ms(run.slot), spec))  # fmt: skip
        self._specs[run.id] = spec
        self.schedule.started(spec.id, run.id)
        self.counters.started += 1
        self.publisher.publish_status(run)
        prepare = lambda: self._prepare(spec)  # noqa: E731
        self.supervisor.start(SupervisedRun(run, context, spec.timeout, spec.package, prepare, lambda: handler.count))

    async def _prepare(self, spec: JobSpec) -> tuple[LoadedPlugin, BaseModel]:
        if not spec.enabled:
            raise RunRefused(f"the plugin {spec.package} is disabled")
        # A plugin loaded before (every run but the first) is a dict read, no coroutine.
        plugin = self.registry.peek(spec.package, spec.code_version)
        try:
            if plugin is None:
                plugin = await self.registry.get(spec.package, spec.code_version)
            elif isinstance(plugin, PluginLoadError):
                raise plugin
        except PluginLoadError as exc:
            raise RunRefused(f"the plugin's code does not load: {exc}") from exc
        shared = self._configs.get(spec.id)
        if shared is not None and shared[0] is spec and shared[1] is plugin:
            return plugin, shared[2]
        try:
            config = plugin.validate(spec.config)
        except ConfigValidationError as exc:
            raise RunRefused(
                f"the stored config is no longer valid for {spec.package}: {exc}; edit and save the job"
            ) from exc
        if immutable_config(config):
            self._configs[spec.id] = (spec, plugin, config)
        return plugin, config

    # -- fencing and the division of jobs (the rules: heartbeat, scheduler_app.cluster) ---------

    def _fence(self, reason: str) -> None:
        """This node may have been declared lost: stop every run now."""
        for run in list(self.supervisor.active.values()):
            self.supervisor.cancel(run, CANCELLED, f"cancelled: scheduler node {run.run.node} could not confirm it "
                                   f"was alive ({reason}); another node may run the job")  # fmt: skip

    def _renamed(self, node: str) -> None:
        self.node = node
        self.claimer.node = node

    def _members_changed(self, before: Membership) -> None:
        """Claim the latest slot of each job this node takes over; say what it runs now."""
        membership = self.heartbeat.membership
        owned, due = self.schedule.take_over(
            before.mine if before.me == membership.me else (lambda job_id: False), membership.mine, now_ms()
        )
        log.info("members: %s; node %s runs %d of %d jobs (%d taken over)", ", ".join(membership.members),
                 membership.me, owned, len(self.schedule), len(due))  # fmt: skip
        if due:
            self.claimer.offer(due)

    def _give_up(self, run: RunSnapshot) -> None:
        """A claim won just before this node was fenced: recorded cancelled, never started."""
        run.status, run.finished_at = CANCELLED, utcnow()
        run.error = f"cancelled: scheduler node {run.node} was fenced before the run could start"
        self.writer.finish_run(RunFinish(run, "", 0))

    def _before_finish(self, supervised: SupervisedRun, outcome: Outcome) -> None:
        """A failed or timed-out run with retries left: queue the next attempt of its slot.

        The retry is a queued row (job, slot, attempt + 1) that waits ``not_before``; any node
        claims it like a manual run once the delay has passed, so it survives this node. A
        cancelled run is not retried."""
        run, spec = supervised.run, self._specs.get(supervised.run.id)
        if spec is None:
            return
        delay = schedules.retry_after(
            outcome.status, run.attempt, spec.max_retries, spec.retry_delay_seconds, spec.retry_max_delay_seconds
        )
        if delay is None:
            return
        not_before = (run.finished_at or utcnow()) + timedelta(seconds=delay)
        supervised.context.logger.warning(
            "attempt %d of %d %s; retry (attempt %d) in %d s, at %s", run.attempt, spec.max_retries + 1,
            outcome.status.replace("_", " "), run.attempt + 1, delay, _when(slots.to_ms(not_before), spec),
        )  # fmt: skip
        self.counters.retries_scheduled += 1
        metrics.run_retried(spec.package)
        asyncio.get_running_loop().create_task(
            self._queue_retry(spec, run.slot, run.attempt + 1, not_before, delay), name=f"retry of run {run.id}"
        )

    async def _queue_retry(self, spec: JobSpec, slot: datetime, attempt: int, not_before: datetime, delay: int) -> None:
        try:
            await self.db.write(claims.queue_retry, spec.id, slot, attempt, not_before, spec.package)
        except Exception as exc:
            log.error("could not queue retry %d of job %s (%s: %s)", attempt, spec.id, type(exc).__name__, exc)
            return
        # Claimed by whichever node's queued-run claimer looks first once the delay has passed.
        asyncio.get_running_loop().call_later(delay, self.claimer.wake_queued)

    def _run_ended(self, run: SupervisedRun) -> None:
        self._specs.pop(run.run.id, None)
        self.schedule.ended(run.run.job_id, run.run.id)
        self.counters.finished += 1

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
            self._configs.pop(job_id, None)
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
