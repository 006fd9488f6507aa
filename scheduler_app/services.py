"""Job rules: the one place that creates, changes, activates and queues jobs.

Views, the admin, management commands and fixtures-through-the-shell all call these
functions, so every path validates configs the same way and announces changes to the
running schedulers (``notify``). Each function is one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from scheduler_app import audit, config_input, notify, plugin_host, schedules, secretbox, slots
from scheduler_app.compiled_sql import CompiledQuery
from scheduler_app.models import Job, JobRun, Plugin, UserProfile
from scheduler_app.plugin_host import ConfigValidationError, FieldError, PluginLoadError

__all__ = [
    "BulkResult",
    "ConfigValidationError",
    "JobRuleError",
    "JobSchedule",
    "ScheduleValidationError",
    "activate_job",
    "bulk_set_active",
    "cancel_run",
    "clone_job",
    "config_problem",
    "create_job",
    "deactivate_job",
    "delete_job",
    "preview_schedule",
    "register_plugin",
    "reload_plugin",
    "rotate_secrets",
    "run_now",
    "set_plugins_enabled",
    "update_job",
    "update_plugin",
    "user_timezone",
    "validate_config",
    "validate_schedule",
]


class JobRuleError(Exception):
    """A request that breaks a job rule; the message is meant for the person who asked."""


def validate_config(plugin: Plugin, raw: Any) -> dict[str, Any]:
    """Return ``raw`` validated and normalised by the plugin's Config, or raise.

    ``config_input.check_storable`` comes first: JSON no database can store (NUL, lone
    surrogates, NaN, huge integers, deep nesting) is refused with a field error on every path.

    A plugin whose code does not load cannot validate anything, so saving is refused with
    the load error rather than storing an unchecked config.
    """
    plugin_host.require_object(raw)  # before the code loads: a shape error needs no plugin
    # What any database can store, before the plugin's model walks it (depth, NUL, surrogates...).
    config_input.check_storable(raw)
    try:
        clean = plugin_host.validate_config(plugin.package, raw, plugin.code_version)
    except PluginLoadError as exc:
        raise ConfigValidationError([FieldError((), f"the plugin's code does not load: {exc}")]) from exc
    # Again on the result: a model may turn valid input into something unstorable ("nan" -> NaN).
    config_input.check_storable(clean)
    return clean


def config_problem(job: Job) -> str | None:
    """Why ``job``'s stored config no longer validates for its plugin's current code; None if it does.

    Plugin code changes (a field added, a constraint tightened) can leave stored configs behind:
    the pages and the admin flag them, and they cannot be activated or run until saved again.
    """
    try:
        validate_config(job.plugin, job.config)
    except ConfigValidationError as exc:
        return str(exc)
    return None


def _require_runnable(job: Job, action: str) -> None:
    """The rule shared by Activate and Run now: an enabled plugin and a config that validates."""
    if not job.plugin.enabled:
        raise JobRuleError(f"Not {action}: the operators disabled the plugin {job.plugin.display_name}.")
    problem = config_problem(job)
    if problem:
        raise JobRuleError(
            f"Not {action}: the saved configuration no longer fits the plugin ({problem}); edit and save it first."
        )


# --- schedules ----------------------------------------------------------------------------------

#: Most retries a job may ask for, and the longest jitter or retry delay (a day).
MAX_RETRIES = 10
MAX_DELAY_SECONDS = 86_400


@dataclass(frozen=True)
class JobSchedule:
    """When a job runs and how it retries: the ``Job`` fields of the same names."""

    schedule: str = ""
    #: empty: filled in by ``validate_schedule`` with the owner's time zone
    timezone: str = ""
    jitter_seconds: int = 0
    max_retries: int = 0
    retry_delay_seconds: int = 10
    retry_max_delay_seconds: int = 600

    @classmethod
    def of(cls, job: Job) -> JobSchedule:
        return cls(**{f.name: getattr(job, f.name) for f in fields(cls)})

    def apply_to(self, job: Job) -> list[str]:
        """Set the fields on ``job``; return their names (for ``update_fields``)."""
        names = [f.name for f in fields(self)]
        for name in names:
            setattr(job, name, getattr(self, name))
        return names


class ScheduleValidationError(JobRuleError):
    """Schedule fields that cannot be saved: ``errors`` maps each field name to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


def user_timezone(user: Any) -> str:
    """The time zone a user's new jobs start with: their profile's, else the server's TIME_ZONE."""
    if user is not None and getattr(user, "pk", None):
        names = _PROFILE_TIMEZONE.run(user_id=user.pk)
        if names and names[0]:
            return str(names[0])
    return str(settings.TIME_ZONE)


# Asked on every plugin page (the new job's form): compiled once per process (scheduler_app/compiled_sql.py).
_PROFILE_TIMEZONE = CompiledQuery(
    lambda user_id: UserProfile.objects.filter(user_id=user_id).order_by("pk").values_list("timezone", flat=True)[:1],
    user_id=-7_000_041,
)


def validate_schedule(plugin: Plugin, wanted: JobSchedule, *, user: Any = None) -> JobSchedule:
    """Return ``wanted`` checked and normalised for ``plugin``, or raise ScheduleValidationError.

    The one place schedule rules live (pages, admin, fixtures and the shell all come here):
    the schedule parses and runs at all; the time zone exists; a user's own schedule does not
    run more often than the plugin's ``min_interval`` (the operators' limit; the plugin's
    own interval is theirs too, so an empty schedule is always allowed); jitter stays below
    the smallest gap between runs (so slots keep their order); retries and delays are sane.
    """
    errors: dict[str, str] = {}
    parsed: schedules.Schedule | None = None
    try:
        parsed = schedules.parse(wanted.schedule)
    except schedules.ScheduleError as exc:
        errors["schedule"] = str(exc)
    zone_name = (wanted.timezone or "").strip() or user_timezone(user)
    try:
        schedules.zone(zone_name)
    except schedules.ScheduleError as exc:
        errors["timezone"] = str(exc)
    gap = schedules.min_gap_seconds(parsed, plugin.interval) if parsed is not None else None
    if parsed is not None and parsed.kind != "plugin" and gap is not None and gap < plugin.min_interval:
        errors["schedule"] = (
            f"This runs every {schedules.seconds_in_words(int(gap))} at the closest; {plugin.display_name} allows "
            f"at most one run every {schedules.seconds_in_words(plugin.min_interval)} (the plugin's minimum "
            "interval, set by the operators)."
        )
    jitter = wanted.jitter_seconds
    if not isinstance(jitter, int) or jitter < 0 or jitter > MAX_DELAY_SECONDS:
        errors["jitter_seconds"] = f"Jitter is a whole number of seconds from 0 to {MAX_DELAY_SECONDS}."
    elif gap is not None and jitter and jitter >= gap:
        errors["jitter_seconds"] = (
            f"Jitter must be shorter than the smallest gap between runs ({schedules.seconds_in_words(int(gap))}), "
            "or runs would swap places."
        )
    if not isinstance(wanted.max_retries, int) or not 0 <= wanted.max_retries <= MAX_RETRIES:
        errors["max_retries"] = f"Retries: a whole number from 0 to {MAX_RETRIES}."
    delay, longest = wanted.retry_delay_seconds, wanted.retry_max_delay_seconds
    if not isinstance(delay, int) or not 1 <= delay <= MAX_DELAY_SECONDS:
        errors["retry_delay_seconds"] = (
            f"The first retry delay is a whole number of seconds from 1 to {MAX_DELAY_SECONDS}."
        )
    if not isinstance(longest, int) or not 1 <= longest <= MAX_DELAY_SECONDS:
        errors["retry_max_delay_seconds"] = (
            f"The longest retry delay is a whole number of seconds from 1 to {MAX_DELAY_SECONDS}."
        )
    elif isinstance(delay, int) and longest < delay:
        errors["retry_max_delay_seconds"] = "The longest retry delay cannot be shorter than the first one."
    if errors:
        raise ScheduleValidationError(errors)
    assert parsed is not None
    return replace(wanted, schedule=parsed.text, timezone=zone_name)


@dataclass(frozen=True)
class SchedulePreview:
    """What the form shows under the schedule: the words and the next runs in the job's zone."""

    #: How a next run is written (``Sat 28 Nov 2026 05:11:05 CET``): on the page, and in the
    #: JSON its script asks for as one types (strftime: Django's ``date`` filter gave the same
    #: text at ~20x the CPU).
    TIME_FORMAT = "%a %d %b %Y %H:%M:%S %Z"

    description: str
    timezone: str
    next_runs: list[datetime]
    #: True for a job not saved yet: an interval's per-job offset is fixed by its id, so the
    #: times shown shift once it is saved
    approximate: bool


def preview_schedule(
    plugin: Plugin, wanted: JobSchedule, *, job: Job | None = None, user: Any = None, now: datetime | None = None,
    count: int = 5,
) -> SchedulePreview:  # fmt: skip
    """Validate ``wanted`` and compute its next ``count`` runs (ScheduleValidationError if invalid)."""
    clean = validate_schedule(plugin, wanted, user=user)
    timing = schedules.Timing.of(
        job.pk if job is not None else 0, clean.schedule, plugin.interval, clean.timezone, clean.jitter_seconds
    )
    now_ms = slots.to_ms(now or timezone.now())
    zone = schedules.zone(clean.timezone)
    runs = [slots.to_datetime(ms).astimezone(zone) for ms in schedules.next_slots(timing, now_ms, count)]
    return SchedulePreview(
        description=schedules.describe(timing.schedule, clean.timezone, plugin.interval),
        timezone=clean.timezone,
        next_runs=runs,
        approximate=job is None and (timing.schedule.kind != "cron" or clean.jitter_seconds > 0),
    )


# --- jobs ---------------------------------------------------------------------------------------


def create_job(
    user: Any,
    plugin: Plugin,
    config: dict[str, Any] | None = None,
    *,
    description: str = "",
    timeout: int | None = None,
    activate: bool = False,
    schedule: JobSchedule | None = None,
) -> Job:
    clean = validate_config(plugin, config or {})
    timing = validate_schedule(plugin, schedule or JobSchedule(), user=user)
    with transaction.atomic():
        job = Job(user=user, plugin=plugin, config=clean, description=description, timeout=timeout)
        timing.apply_to(job)
        job.save()
        audit.record(
            "job.create",
            f"created {_job_label(job)}",
            job=job,
            changes=audit.config_diff({}, clean, audit.plugin_schema(plugin.package, plugin.code_version)),
        )
        if activate:
            _activate(job)
    notify.jobs_changed([job.pk])
    return job


_UNSET: Any = object()


def update_job(
    job: Job,
    *,
    config: dict[str, Any] | None = None,
    description: str | None = None,
    timeout: int | None = _UNSET,
    schedule: JobSchedule | None = None,
) -> Job:
    """Change a job's config, description, timeout or schedule; each is validated first."""
    fields = ["updated_at"]
    before = audit.job_fields(job)
    if config is not None:
        job.config = validate_config(job.plugin, config)
        fields.append("config")
    if schedule is not None:
        fields += validate_schedule(job.plugin, schedule, user=job.user).apply_to(job)
    if description is not None:
        job.description = description
        fields.append("description")
    if timeout is not _UNSET:
        if timeout is not None and timeout <= 0:
            raise JobRuleError("The timeout must be a positive number of seconds.")
        job.timeout = timeout
        fields.append("timeout")
    with transaction.atomic():
        job.save(update_fields=fields)
        # every field the change touched (description, timeout, schedule ...), then the config's leaves
        changes = audit.field_diff(before, audit.job_fields(job))
        changes.pop("config", None)
        schema = audit.plugin_schema(job.plugin.package, job.plugin.code_version) if config is not None else None
        changes.update(audit.config_diff(before["config"], job.config, schema))
        if changes:
            audit.record("job.update", f"changed {_job_label(job)}: {', '.join(changes)}", job=job, changes=changes)
    notify.jobs_changed([job.pk])
    return job


def _job_label(job: Job) -> str:
    return f"job {job.pk} “{job.description}”" if job.description else f"job {job.pk}"


def clone_job(job: Job) -> Job:
    """Copy a job's configuration into a new, inactive job of the same user and plugin."""
    description = f"Copy of {job.description}" if job.description else f"Copy of job {job.pk}"
    copy = Job.objects.create(
        user=job.user,
        plugin=job.plugin,
        config=job.config,
        description=description[:200],
        timeout=job.timeout,
        active=False,
        **{name: getattr(job, name) for name in JobSchedule.__dataclass_fields__},
    )
    audit.record("job.clone", f"cloned {_job_label(job)} into {_job_label(copy)}", job=copy)
    return copy


def _activate(job: Job) -> list[Job]:
    """Activate ``job``; returns the sibling it replaced (a list: none or one)."""
    # Lock every job of this (user, plugin) so two activations cannot interleave; the partial
    # unique constraint is the last line of defence if something bypasses this function.
    siblings = list(Job.objects.select_for_update().filter(user_id=job.user_id, plugin_id=job.plugin_id))
    replaced = [s for s in siblings if s.active and s.pk != job.pk]
    Job.objects.filter(pk__in=[s.pk for s in replaced]).update(active=False, updated_at=timezone.now())
    job.active = True
    job.save(update_fields=["active", "updated_at"])
    for other in replaced:
        audit.record(
            "job.deactivate",
            f"deactivated {_job_label(other)}: {_job_label(job)} was activated",
            job=other,
            changes={"active": [True, False]},
        )
    audit.record("job.activate", f"activated {_job_label(job)}", job=job, changes={"active": [False, True]})
    return replaced


def activate_job(job: Job) -> list[Job]:
    """Make ``job`` the active job of its (user, plugin), deactivating the previous one atomically.

    Refused (JobRuleError) when the plugin is disabled or the stored config no longer validates.
    Returns the job it replaced, as a list of none or one, so callers can say so.
    """
    _require_runnable(job, "activated")
    try:
        with transaction.atomic():
            replaced = _activate(job)
    except IntegrityError as exc:
        raise JobRuleError("Another job of this plugin was activated at the same time; try again.") from exc
    notify.jobs_changed(plugin_ids=[job.plugin_id])
    return replaced


def deactivate_job(job: Job) -> Job:
    job.active = False
    with transaction.atomic():
        job.save(update_fields=["active", "updated_at"])
        audit.record("job.deactivate", f"deactivated {_job_label(job)}", job=job, changes={"active": [True, False]})
    notify.jobs_changed([job.pk])
    return job


def delete_job(job: Job) -> None:
    """Delete a job with its runs and logs; a scheduler running it cancels the run."""
    job_id = job.pk
    with transaction.atomic():
        audit.record(
            "job.delete",
            f"deleted {_job_label(job)} with its runs",
            job=job,
            changes=audit.config_diff(job.config, {}, audit.plugin_schema(job.plugin.package)),
        )
        job.delete()
    notify.jobs_changed([job_id])


def run_now(job: Job, *, at: Any = None) -> JobRun:
    """Queue a manual run; a scheduler claims it within a second.

    Refused while one is queued (a retry waiting for its delay does not count: the manual run
    goes first), when the plugin is disabled, or when the stored config no longer validates
    (the run could only fail).
    """
    _require_runnable(job, "run")
    with transaction.atomic():
        if JobRun.objects.filter(job=job, status=JobRun.Status.QUEUED, trigger=JobRun.Trigger.MANUAL).exists():
            raise JobRuleError("A run of this job is already queued.")
        run = JobRun.objects.create(
            job=job,
            slot=at or timezone.now(),
            trigger=JobRun.Trigger.MANUAL,
            status=JobRun.Status.QUEUED,
            plugin_package=job.plugin.package,
        )
        audit.record("run.now", f"queued run {run.pk} of {_job_label(job)} (run now)", job=job)
    notify.run_queued(run.pk)
    return run


def cancel_run(run: JobRun, by: Any) -> JobRun:
    """Cancel a queued or running run on behalf of ``by`` (its owner, or an operator).

    A queued run ends ``cancelled`` here and now (conditional update: a scheduler that claimed
    it meanwhile makes it a running one). A running run gets ``cancel_requested_at`` and a
    ``run.cancel`` message: the node running it cancels the task and records ``cancelled``;
    a lost message is covered by the nodes' check of the flag every few seconds. A cancelled
    run is not retried. Raises JobRuleError for a run that has already finished.
    """
    now = timezone.now()
    who = by.get_username() if by is not None else "an operator"
    message = f"cancelled by {who}"
    with transaction.atomic():
        queued = JobRun.objects.filter(pk=run.pk, status=JobRun.Status.QUEUED).update(
            status=JobRun.Status.CANCELLED, finished_at=now, error=message, cancelled_by=by, cancel_requested_at=now
        )
        asked = 0
        if not queued:
            asked = JobRun.objects.filter(
                pk=run.pk, status=JobRun.Status.RUNNING, cancel_requested_at__isnull=True
            ).update(cancel_requested_at=now, cancelled_by=by)
            if asked:
                notify.run_cancel(run.pk, who)  # sent after the commit
            elif not JobRun.objects.filter(pk=run.pk, status=JobRun.Status.RUNNING).exists():
                run.refresh_from_db()
                raise JobRuleError(f"Run #{run.pk} has already ended ({run.get_status_display()}).")
        if queued or asked:
            job = Job.objects.select_related("plugin").get(pk=run.job_id)
            state = "queued" if queued else "running"
            audit.record("run.cancel", f"cancelled run {run.pk} of {_job_label(job)} ({state})", job=job)
    run.refresh_from_db()
    return run


@dataclass
class BulkResult:
    """What a bulk (de)activation did, for the admin's messages."""

    changed: int = 0
    problems: list[str] = field(default_factory=list)
    #: Jobs left out of the selection that lost their active place to a selected one.
    replaced: list[Job] = field(default_factory=list)


def bulk_set_active(jobs: Iterable[Job], active: bool) -> BulkResult:
    """Activate or deactivate several jobs.

    Activating several jobs of one (user, plugin) cannot activate them all: an already active
    one among them stays active, else the first is activated, and the rest are reported as
    problems. A job outside the selection that an activation replaces is reported in ``replaced``.
    """
    result = BulkResult()
    jobs = list(jobs)
    if active:
        chosen: dict[tuple[int, int], Job] = {}
        for job in jobs:
            key = (job.user_id, job.plugin_id)
            if key not in chosen or (job.active and not chosen[key].active):
                chosen[key] = job
    for job in jobs:
        if active and chosen[(job.user_id, job.plugin_id)] is not job:
            winner = chosen[(job.user_id, job.plugin_id)]
            result.problems.append(f"{job}: only one job of the same user and plugin can be active, and {winner} is")
            continue
        if job.active == active:
            continue
        try:
            if active:
                result.replaced += activate_job(job)
            else:
                deactivate_job(job)
        except JobRuleError as exc:
            result.problems.append(f"{job}: {exc}")
            continue
        result.changed += 1
    return result


def rotate_secrets() -> int:
    """Re-encrypt every stored secret with the first configured key (plain ones get encrypted).

    Returns how many jobs changed. Run it after putting a new key first (docs/operations.md).
    """
    changed = 0
    for job in Job.objects.select_related("plugin").iterator():
        try:
            # Through the plugin's Config: it knows which values are secrets, so ones stored in
            # clear get sealed too; sealing always uses the first key.
            config = validate_config(job.plugin, job.config)
        except ConfigValidationError:
            config = secretbox.rotate(job.config)  # a stale config: re-seal what is sealed
        if config != job.config:
            Job.objects.filter(pk=job.pk).update(config=config)
            changed += 1
    return changed


_PLUGIN_AUDITED = ("name", "package", "interval", "enabled", "timeout", "description")


def update_plugin(plugin: Plugin, *, _action: str = "plugin.update") -> Plugin:
    """Save an operator's change to a plugin (interval, enabled, timeout) and announce it."""
    plugin.full_clean()
    old = Plugin.objects.filter(pk=plugin.pk).values(*_PLUGIN_AUDITED).first() if plugin.pk else None
    with transaction.atomic():
        plugin.save()
        changes = audit.field_diff(old or {}, {name: getattr(plugin, name) for name in _PLUGIN_AUDITED})
        if old is None:
            audit.record(
                _action,
                f"registered plugin {plugin.package}, every {plugin.interval} s",
                plugin=plugin,
                changes=changes,
            )
        elif changes:
            action = _action
            if set(changes) == {"enabled"}:
                action = "plugin.enable" if plugin.enabled else "plugin.disable"
            audit.record(
                action, f"changed plugin {plugin.package}: {', '.join(changes)}", plugin=plugin, changes=changes
            )
    notify.jobs_changed(plugin_ids=[plugin.pk])
    return plugin


def set_plugins_enabled(plugins: Iterable[Plugin], enabled: bool) -> int:
    ids = [p.pk for p in plugins]
    with transaction.atomic():
        changing = list(Plugin.objects.select_for_update().filter(pk__in=ids).exclude(enabled=enabled))
        count = Plugin.objects.filter(pk__in=[p.pk for p in changing]).update(
            enabled=enabled, updated_at=timezone.now()
        )
        verb = "enabled" if enabled else "disabled"
        for plugin in changing:
            audit.record(
                f"plugin.{verb[:-1]}",
                f"{verb} plugin {plugin.package}",
                plugin=plugin,
                changes={"enabled": [not enabled, enabled]},
            )
    notify.jobs_changed(plugin_ids=ids)
    return count


def reload_plugin(plugin: Plugin) -> Plugin:
    """Ask every scheduler to re-import the plugin's code (checked here first).

    Raises PluginLoadError if the new code does not load; the old code keeps running.
    """
    plugin_host.check_reload(plugin.package)
    with transaction.atomic():
        Plugin.objects.filter(pk=plugin.pk).update(code_version=F("code_version") + 1, updated_at=timezone.now())
        plugin.refresh_from_db(fields=["code_version", "updated_at"])
        audit.record(
            "plugin.reload",
            f"reloaded plugin {plugin.package}: code version {plugin.code_version}",
            plugin=plugin,
            changes={"code_version": [plugin.code_version - 1, plugin.code_version]},
        )
    plugin_host.mark_version(plugin.package, plugin.code_version)
    notify.plugin_reload(plugin.pk, plugin.package, plugin.code_version)
    return plugin


def register_plugin(
    package: str, *, interval: int, name: str = "", description: str = "", enabled: bool = True
) -> Plugin:
    """Register a plugin found on disk (admin "Available plugins", commands) in one step.

    The code must load first (raises PluginLoadError); the description defaults to the plugin
    class's ``description``. Raises JobRuleError if the package is already registered.
    """
    loaded = plugin_host.get_plugin(package)
    if Plugin.objects.filter(package=package).exists():
        raise JobRuleError(f"{package} is already registered.")
    plugin = Plugin(
        package=package,
        interval=interval,
        name=name,
        description=description or str(getattr(loaded.instance, "description", "") or ""),
        enabled=enabled,
    )
    try:
        with transaction.atomic():
            update_plugin(plugin, _action="plugin.register")
    except IntegrityError as exc:
        raise JobRuleError(f"{package} is already registered.") from exc
    return plugin
