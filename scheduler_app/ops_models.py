"""The operations data model: the audit trail and failure alerts.

Kept apart from ``models.py`` (which imports these at its end, so Django sees them as the
app's models) because they describe what happened to jobs, not what jobs are. The rules
that write them live in ``audit.py`` and ``alerts.py``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class AuditEntry(models.Model):
    """One change to a job or plugin, or one manual action, with who, when and through what."""

    class Via(models.TextChoices):
        PAGE = "page", "page"
        ADMIN = "admin", "admin"
        FIXTURE = "fixture", "fixture"
        COMMAND = "command", "command"
        SHELL = "shell", "shell"

    at = models.DateTimeField("when", default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="who",
        help_text="The person who made the change; empty for fixtures and shells without a user.",
    )
    actor_name = models.CharField("who (name)", max_length=150, blank=True, help_text="Kept if the user is deleted.")
    via = models.CharField("through", max_length=10, choices=Via.choices, default=Via.SHELL)
    action = models.CharField("action", max_length=40, db_index=True, help_text="e.g. job.update, plugin.reload.")
    # The job may be deleted later; its id and owner stay so the owner still sees the history.
    job = models.ForeignKey(
        "scheduler_app.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", verbose_name="job"
    )
    job_ref = models.PositiveBigIntegerField("job id", null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name="job owner",
        help_text="Whose job it concerns: the owner (and operators) may see this entry.",
    )
    plugin = models.ForeignKey(
        "scheduler_app.Plugin", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    summary = models.CharField("summary", max_length=300)
    changes = models.JSONField(
        "changes", default=dict, blank=True, help_text="Field -> [old, new]; secret values are masked."
    )

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        indexes = [models.Index(fields=["job_ref", "-at"], name="audit_job_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} ({self.via}): {self.summary}"


class AlertRule(models.Model):
    """Who to tell when a job starts failing and when it recovers.

    A rule with a job belongs to that job's owner; a rule without one is an operator's
    default, used for every job that has no rule of its own.
    """

    job = models.OneToOneField(
        "scheduler_app.Job",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rule",
        verbose_name="job",
        help_text="Empty: an operator's default for every job without its own rule.",
    )
    enabled = models.BooleanField("enabled", default=True)
    email = models.CharField(
        "email", max_length=500, blank=True, help_text="Comma-separated addresses; empty for no email."
    )
    webhook_url = models.URLField(
        "webhook URL", max_length=500, blank=True, help_text="Receives a JSON POST with a Slack-compatible 'text'."
    )
    after_failures = models.PositiveIntegerField(
        "after failures", default=1, help_text="Say it is failing after this many failed runs in a row."
    )
    notify_recovery = models.BooleanField("tell on recovery", default=True)
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)

    class Meta:
        verbose_name = "alert rule"
        constraints = [models.CheckConstraint(condition=Q(after_failures__gt=0), name="alert_after_positive")]

    def __str__(self) -> str:
        return f"alerts for job {self.job_id}" if self.job_id else "default alerts (every job without its own rule)"


class JobAlertState(models.Model):
    """Where a job stands for alerting: up or failing, and the last finished run looked at.

    ``last_run_id`` is the claim: a scheduler node applies a run only with a conditional
    update ``last_run_id < run.id``, so with several nodes each run flips the state once.
    """

    class State(models.TextChoices):
        UP = "up", "up"
        FAILING = "failing", "failing"

    job = models.OneToOneField(
        "scheduler_app.Job", primary_key=True, on_delete=models.CASCADE, related_name="alert_state"
    )
    state = models.CharField("state", max_length=10, choices=State.choices, default=State.UP)
    consecutive_failures = models.PositiveIntegerField("failures in a row", default=0)
    last_run_id = models.PositiveBigIntegerField("last run looked at", default=0)
    changed_at = models.DateTimeField("changed", default=timezone.now)

    class Meta:
        verbose_name = "job alert state"

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.state}"


class AlertDelivery(models.Model):
    """One message to one address about one state change, and how sending it went."""

    class Kind(models.TextChoices):
        FAILING = "failing", "started failing"
        RECOVERED = "recovered", "recovered"

    class Channel(models.TextChoices):
        EMAIL = "email", "email"
        WEBHOOK = "webhook", "webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed (gave up)"

    job = models.ForeignKey(
        "scheduler_app.Job", null=True, on_delete=models.SET_NULL, related_name="+", verbose_name="job"
    )
    run = models.ForeignKey(
        "scheduler_app.JobRun", null=True, on_delete=models.SET_NULL, related_name="+", verbose_name="run"
    )
    kind = models.CharField("kind", max_length=10, choices=Kind.choices)
    channel = models.CharField("channel", max_length=10, choices=Channel.choices)
    target = models.CharField("to", max_length=500)
    subject = models.CharField("subject", max_length=300)
    body = models.TextField("message")
    status = models.CharField("status", max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField("attempts", default=0, editable=False)
    next_attempt_at = models.DateTimeField("next attempt", default=timezone.now)
    last_error = models.TextField("last error", blank=True)
    response_code = models.PositiveIntegerField("HTTP status", null=True, blank=True)
    created_at = models.DateTimeField("created", default=timezone.now)
    sent_at = models.DateTimeField("sent", null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="alert_due_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} -> {self.target} ({self.status})"
