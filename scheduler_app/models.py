"""The data model: plugins, users' jobs, runs, their log lines and scheduler nodes.

Invariants live in the database (constraints), so no path -- form, admin, shell, bulk
``update()`` -- can break them. The rules for changing jobs live in ``services.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import ExpressionWrapper, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone


class Plugin(models.Model):
    """A registered plugin: which code runs and how often."""

    name = models.CharField(
        "name", max_length=100, blank=True, help_text="Human name shown to users; defaults to the package's folder."
    )
    package = models.CharField(
        "package",
        max_length=255,
        unique=True,
        help_text="Dotted path to the plugin class, e.g. plugins.sample_plugin@v0_1_0.plugin.Plugin",
    )
    interval = models.PositiveIntegerField("interval (seconds)", help_text="Active jobs run every this many seconds.")
    description = models.TextField("description", blank=True, help_text="What the plugin does, shown to users.")
    enabled = models.BooleanField("enabled", default=True, help_text="Disabled plugins schedule no runs.")
    timeout = models.PositiveIntegerField(
        "default timeout (seconds)", default=300, help_text="A run still going after this long is cancelled."
    )
    min_interval = models.PositiveIntegerField(
        "minimum interval (seconds)",
        default=1,
        help_text="Users' own schedules for this plugin may not run more often than this (smallest gap between runs).",
    )
    code_version = models.PositiveIntegerField(
        "code version", default=1, editable=False, help_text="Bumped by 'Reload code'; every scheduler re-imports."
    )
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)

    class Meta:
        ordering = ["name", "package"]
        constraints = [
            models.CheckConstraint(condition=~Q(package=""), name="plugin_package_not_empty"),
            models.CheckConstraint(condition=Q(interval__gt=0), name="plugin_interval_positive"),
            models.CheckConstraint(condition=Q(timeout__gt=0), name="plugin_timeout_positive"),
            models.CheckConstraint(condition=Q(min_interval__gt=0), name="plugin_min_interval_positive"),
        ]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        parts = self.package.split(".")
        return parts[-3] if len(parts) >= 3 else self.package


class JobQuerySet(models.QuerySet["Job"]):
    def with_effective_timeout(self) -> JobQuerySet:
        """Annotate ``effective_timeout_seconds``: the job's timeout, else its plugin's default.

        The one statement of that rule: the engine reads it in bulk, ``Job.effective_timeout``
        reads it for one job."""
        return self.annotate(effective_timeout_seconds=Coalesce("timeout", "plugin__timeout"))


class Job(models.Model):
    """One saved configuration of a plugin, owned by a user; at most one active per (user, plugin)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs", verbose_name="user"
    )
    plugin = models.ForeignKey(Plugin, on_delete=models.PROTECT, related_name="jobs", verbose_name="plugin")
    description = models.CharField("description", max_length=200, blank=True, help_text="A note to tell configs apart.")
    config = models.JSONField("config", default=dict, blank=True, help_text="Validated against the plugin's Config.")
    active = models.BooleanField("active", default=False, help_text="Only the active job of a plugin is scheduled.")
    timeout = models.PositiveIntegerField(
        "timeout (seconds)", null=True, blank=True, help_text="Overrides the plugin's default timeout when set."
    )
    # When it runs (scheduler_app.schedules reads these; services.validate_schedule checks them).
    schedule = models.CharField(
        "schedule",
        max_length=120,
        blank=True,
        help_text="Empty: the plugin's interval. An interval (every 30s, every 5m, every 2h, every 1d) or a cron "
        "expression: 5 fields (minute hour day month weekday), or 6 with a leading seconds field.",
    )
    timezone = models.CharField(
        "time zone",
        max_length=64,
        blank=True,
        help_text="IANA name (e.g. Europe/Paris) whose wall clock a cron schedule follows; empty: the server's "
        "TIME_ZONE.",
    )
    jitter_seconds = models.PositiveIntegerField(
        "jitter (seconds)",
        default=0,
        help_text="Delay each run by up to this much (the same delay on every node for a given slot).",
    )
    max_retries = models.PositiveSmallIntegerField(
        "retries", default=0, help_text="How many times a failed or timed-out run is tried again for the same slot."
    )
    retry_delay_seconds = models.PositiveIntegerField(
        "first retry after (seconds)", default=10, help_text="Delay before the first retry; doubled for each next one."
    )
    retry_max_delay_seconds = models.PositiveIntegerField(
        "longest retry delay (seconds)", default=600, help_text="The doubling stops at this delay."
    )
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["plugin_id", "-active", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "plugin"], condition=Q(active=True), name="one_active_job_per_user_plugin"
            ),
            models.CheckConstraint(condition=Q(timeout__isnull=True) | Q(timeout__gt=0), name="job_timeout_positive"),
        ]
        indexes = [
            models.Index(fields=["user", "plugin"], name="job_user_plugin_idx"),
            models.Index(fields=["active", "plugin"], name="job_active_plugin_idx"),
        ]

    def __str__(self) -> str:
        label = self.description or f"job {self.pk}"
        return f"{label} ({self.plugin.display_name}, {self.user})"

    @property
    def effective_timeout(self) -> int:
        """Seconds a run may take (``JobQuerySet.with_effective_timeout`` says how)."""
        if self.pk is None:
            raise ValueError("an unsaved job has no effective timeout yet")
        job = Job.objects.with_effective_timeout().only("pk").get(pk=self.pk)
        return int(job.effective_timeout_seconds)  # type: ignore[attr-defined]  # an annotation

    @property
    def effective_timezone(self) -> str:
        return self.timezone or settings.TIME_ZONE


class UserProfile(models.Model):
    """A user's preferences: the time zone new jobs start with (the form's default)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile", verbose_name="user"
    )
    timezone = models.CharField(
        "time zone",
        max_length=64,
        blank=True,
        help_text="IANA name (e.g. Europe/Paris) new jobs are scheduled in; empty: the server's TIME_ZONE.",
    )

    class Meta:
        verbose_name = "user profile"

    def __str__(self) -> str:
        return f"profile of {self.user}"


class JobRun(models.Model):
    """One execution of a job. Unique (job, slot, attempt) is the claim that makes each attempt of a slot run once."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        TIMED_OUT = "timed_out", "timed out"
        CANCELLED = "cancelled", "cancelled"
        LOST = "lost", "lost"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED, Status.LOST)

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "schedule"
        MANUAL = "manual", "manual"
        RETRY = "retry", "retry"

    # No index of its own: the claim's unique (job, slot, attempt) starts with job_id and serves
    # every lookup by job (a second copy cost a scattered B-tree page per claimed run).
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="runs", verbose_name="job", db_index=False)
    slot = models.DateTimeField("slot", help_text="The time this run was due (the request time for manual runs).")
    attempt = models.PositiveSmallIntegerField(
        "attempt", default=1, help_text="1 for the first run of a slot; 2, 3... for its retries."
    )
    not_before = models.DateTimeField(
        "not before", null=True, blank=True, help_text="A queued retry is not started before this time."
    )
    trigger = models.CharField("trigger", max_length=10, choices=Trigger.choices, default=Trigger.SCHEDULE)
    status = models.CharField("status", max_length=10, choices=Status.choices, default=Status.QUEUED)
    node = models.CharField("node", max_length=200, blank=True, help_text="The scheduler node that ran it.")
    plugin_package = models.CharField("plugin package", max_length=255, blank=True, help_text="The code that ran.")
    created_at = models.DateTimeField("queued", default=timezone.now)
    started_at = models.DateTimeField("started", null=True, blank=True)
    finished_at = models.DateTimeField("finished", null=True, blank=True)
    error = models.TextField("error", blank=True)
    traceback = models.TextField("traceback", blank=True)
    log_count = models.PositiveIntegerField("log lines", default=0)
    cancel_requested_at = models.DateTimeField(
        "cancel requested", null=True, blank=True, help_text="Someone asked to cancel this run (it stops soon)."
    )
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="cancelled by",
        db_index=False,  # a partial index below: almost no run has one
    )

    class Meta:
        ordering = ["-slot", "-id"]
        get_latest_by = "slot"
        # The claim: each (job, slot, attempt) runs once. A retry is a new row with the next attempt.
        constraints = [models.UniqueConstraint(fields=["job", "slot", "attempt"], name="one_run_per_job_slot_attempt")]
        # (job, -slot) is the unique constraint's index read backwards: no index of its own.
        indexes = [
            models.Index(fields=["status", "node"], name="run_status_node_idx"),
            # Partial: a claimed run has neither value, so its insert and (on PostgreSQL, never a
            # HOT update) its finish write fewer index entries. Every query compares the column to
            # a value, which implies IS NOT NULL: both databases still use these.
            models.Index(fields=["finished_at"], name="run_finished_idx", condition=Q(finished_at__isnull=False)),
            models.Index(fields=["cancelled_by"], name="run_cancelled_by_idx", condition=Q(cancelled_by__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of job {self.job_id} at {self.slot:%Y-%m-%d %H:%M:%S} ({self.status})"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    # Django's generated get_FOO_display builds the field's choices dict on every call (~10 us);
    # the run history shows two per row, a fifth of its template. Same labels from a dict built once.
    def get_status_display(self) -> str:  # type: ignore[no-redef]  # (django-stubs declares the generated one)
        return _RUN_LABELS["status"].get(self.status, self.status)

    def get_trigger_display(self) -> str:  # type: ignore[no-redef]
        return _RUN_LABELS["trigger"].get(self.trigger, self.trigger)


_RUN_LABELS: dict[str, dict[str, str]] = {
    "status": {str(value): str(label) for value, label in JobRun.Status.choices},
    "trigger": {str(value): str(label) for value, label in JobRun.Trigger.choices},
}


class LogLine(models.Model):
    """One log record of a run; ``id`` is the global cursor a reconnecting browser resumes from."""

    # No index of its own: the unique (run, seq) starts with run_id.
    run = models.ForeignKey(
        JobRun, on_delete=models.CASCADE, related_name="log_lines", verbose_name="run", db_index=False
    )
    seq = models.PositiveIntegerField("sequence", help_text="Order of the line within its run, from 1.")
    created_at = models.DateTimeField("time")
    level = models.PositiveSmallIntegerField("level", default=20, help_text="Python logging level (20 = INFO).")
    message = models.TextField("message")

    class Meta:
        ordering = ["run_id", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="one_line_per_run_seq")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq}: {self.message[:60]}"

    @property
    def level_name(self) -> str:
        import logging

        return logging.getLevelName(self.level)


def alive_condition(now: datetime | None = None, lost_after_seconds: float | None = None) -> Q:
    """Whether a node is alive: not stopped, and a heartbeat within ``LOST_AFTER_SECONDS``.

    The one statement of the rule; the queryset methods, the admin and the lost-run sweep use it."""
    if lost_after_seconds is None:
        lost_after_seconds = float(settings.SCHEDULER["LOST_AFTER_SECONDS"])
    cutoff = (now or timezone.now()) - timedelta(seconds=lost_after_seconds)
    return Q(stopped_at__isnull=True, lost_at__isnull=True, last_heartbeat__gte=cutoff)


class SchedulerNodeQuerySet(models.QuerySet["SchedulerNode"]):
    def alive(self, now: datetime | None = None, lost_after_seconds: float | None = None) -> SchedulerNodeQuerySet:
        return self.filter(alive_condition(now, lost_after_seconds))

    def dead(self, now: datetime | None = None, lost_after_seconds: float | None = None) -> SchedulerNodeQuerySet:
        return self.exclude(alive_condition(now, lost_after_seconds))

    def with_alive(self, now: datetime | None = None) -> SchedulerNodeQuerySet:
        """Annotate ``alive_now`` (a boolean) for lists that show it per node."""
        return self.annotate(alive_now=ExpressionWrapper(alive_condition(now), output_field=models.BooleanField()))


class SchedulerNode(models.Model):
    """A ``runscheduler`` process; its heartbeat says whether it is alive."""

    name = models.CharField("name", max_length=200, unique=True, help_text="host:pid:random, unique per process.")
    hostname = models.CharField("host", max_length=200, blank=True)
    pid = models.PositiveIntegerField("pid", null=True, blank=True)
    started_at = models.DateTimeField("started", default=timezone.now)
    last_heartbeat = models.DateTimeField("last heartbeat", default=timezone.now)
    stopped_at = models.DateTimeField("stopped", null=True, blank=True, help_text="Set on a clean shutdown.")
    lost_at = models.DateTimeField(
        "declared lost",
        null=True,
        blank=True,
        editable=False,
        help_text="Set when another node found no heartbeat for SCHEDULER_LOST_AFTER_SECONDS and marked its runs "
        "lost. A node that finds it set (it was paused) cancels its runs and rejoins under a new name.",
    )
    running_runs = models.PositiveIntegerField("running runs", default=0, editable=False)
    scheduled_jobs = models.PositiveIntegerField("scheduled jobs", default=0, editable=False)

    objects = SchedulerNodeQuerySet.as_manager()

    class Meta:
        ordering = ["-last_heartbeat"]
        indexes = [models.Index(fields=["last_heartbeat"], name="node_heartbeat_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_alive(self) -> bool:
        """``alive_condition`` checked against this object's fields (they may be unsaved)."""
        annotated = getattr(self, "alive_now", None)
        if annotated is not None:
            return bool(annotated)
        fields = {
            name: Value(getattr(self, name), models.DateTimeField())
            for name in ("stopped_at", "lost_at", "last_heartbeat")
        }
        return alive_condition().check(fields)


# The audit trail and alert models live in their own module; importing them here is what makes
# Django see them as this app's models.
from scheduler_app.ops_models import AlertDelivery, AlertRule, AuditEntry, JobAlertState  # noqa: E402

__all__ = [
    "AlertDelivery",
    "AlertRule",
    "AuditEntry",
    "Job",
    "JobAlertState",
    "JobRun",
    "LogLine",
    "Plugin",
    "SchedulerNode",
]
