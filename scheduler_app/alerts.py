"""Failure alerts: tell a job's owner when it starts failing and when it recovers.

It runs in every scheduler process, in a thread of its own (``AlertWorker``), and reads
finished runs from the database -- it never touches the engine or its event loop, so a slow
mail server or a dead webhook can delay alerts, never runs.

Two units of work, each a method a test can call with the time (healthchecks' sendalerts
habit):

- ``process_finished_runs(now)``: reads the runs that ended since its cursor (a keyset on
  ``(finished_at, id)``, read once they ended ``SETTLE`` ago so the batched writer has
  committed them; once per look-back it also sweeps the recent past for records committed
  late, e.g. after a database outage) and applies each to its job's ``JobAlertState``. Runs
  that change nothing (a success while up, a cancelled run) write nothing. A state change
  ("flip": up -> failing after N failures in a row, failing -> up on a success) creates one
  ``AlertDelivery`` per address. Several nodes read the same runs: the conditional update on
  ``last_run_id`` lets exactly one apply each run. Nothing is read while nobody has a rule.
- ``send_due_deliveries(now)``: claims due deliveries with a conditional update (a lease)
  and sends them on a small thread pool; each attempt's result is recorded, a failure is
  retried with exponential backoff up to ``MAX_ATTEMPTS``, then marked failed.

Rules: a job's own ``AlertRule`` (set by its owner on the job's page); without one, the
operators' default rules (``AlertRule`` with no job, set in the admin).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from scheduler_app import metrics
from scheduler_app.models import Job, JobRun
from scheduler_app.ops_models import AlertDelivery, AlertRule, JobAlertState

log = logging.getLogger(__name__)

FAILURES = (JobRun.Status.FAILED, JobRun.Status.TIMED_OUT, JobRun.Status.LOST)
#: Most runs applied in one pass (the next pass goes on from the cursor).
BATCH = 500
#: Runs are read once they ended this long ago: the writer has committed their records by then.
SETTLE = timedelta(seconds=1)
#: A claimed delivery not finished within this long (its node died) is tried again.
LEASE_SECONDS = 120


def config() -> dict[str, Any]:
    return settings.ALERTS


# --- rules ------------------------------------------------------------------------------------


def rules_for(job_id: int, own: AlertRule | None, defaults: list[AlertRule]) -> list[AlertRule]:
    """A job's own rule (even a disabled one: the owner opted out), else the enabled defaults."""
    if own is not None:
        return [own] if own.enabled else []
    return [rule for rule in defaults if rule.enabled]


def threshold(rules: list[AlertRule]) -> int:
    return min((rule.after_failures for rule in rules), default=1)


def set_job_rule(
    job: Job, *, enabled: bool, email: str, webhook_url: str, after_failures: int, notify_recovery: bool
) -> AlertRule:
    """Save the owner's alert rule for ``job`` (recorded in the audit trail)."""
    from scheduler_app import audit

    with transaction.atomic():
        rule, created = AlertRule.objects.get_or_create(job=job)
        before = {
            "enabled": None if created else rule.enabled,
            "email": "" if created else rule.email,
            "webhook_url": "" if created else rule.webhook_url,
            "after_failures": None if created else rule.after_failures,
            "notify_recovery": None if created else rule.notify_recovery,
        }
        rule.enabled, rule.email, rule.webhook_url = enabled, email.strip(), webhook_url.strip()
        rule.after_failures, rule.notify_recovery = after_failures, notify_recovery
        rule.full_clean()
        rule.save()
        after = {
            "enabled": enabled,
            "email": rule.email,
            "webhook_url": audit.MASK if rule.webhook_url else "",  # webhook URLs often carry a token
            "after_failures": after_failures,
            "notify_recovery": notify_recovery,
        }
        if before["webhook_url"]:
            before["webhook_url"] = audit.MASK
        changes = {f"alerts.{k}": v for k, v in audit.field_diff(before, after).items()}
        if changes:
            audit.record("job.alerts", f"changed the alerts of job {job.pk}", job=job, changes=changes)
    return rule


# --- messages ---------------------------------------------------------------------------------


def describe(job: Job, run: dict[str, Any], kind: str, failures: int) -> tuple[str, str, dict[str, Any]]:
    """(subject, text, webhook payload) of one state change."""
    label = job.description or f"job {job.pk}"
    who = f"{label} ({job.plugin.display_name}, {job.user.get_username()})"
    if kind == AlertDelivery.Kind.FAILING:
        times = f" {failures} times in a row" if failures > 1 else ""
        subject = f"[jobscheduler] {label} is failing"
        text = f"{who} is failing{times}: run #{run['id']} {run['status'].replace('_', ' ')}"
        if run.get("error"):
            text += f": {run['error'][:500]}"
    else:
        subject = f"[jobscheduler] {label} recovered"
        text = f"{who} recovered: run #{run['id']} succeeded"
    site = config()["SITE_URL"]
    if site:
        text += f"\n{site.rstrip('/')}/runs/{run['id']}/"
    payload = {
        "text": text,  # what Slack (and Mattermost, Discord's /slack endpoint) show
        "event": f"job.{kind}",
        "job": {
            "id": job.pk,
            "description": job.description,
            "plugin": job.plugin.package,
            "user": job.user.get_username(),
        },
        "run": {"id": run["id"], "status": run["status"], "error": run.get("error", "")[:2000]},
        "consecutive_failures": failures,
    }
    return subject, text, payload


# --- applying finished runs -------------------------------------------------------------------


def transition(state: JobAlertState, status: str, rules: list[AlertRule]) -> tuple[int, str, str | None]:
    """(failures in a row, state, flip or None) after a run that ended with ``status``."""
    failures, new_state, flip = state.consecutive_failures, state.state, None
    if status in FAILURES:
        failures += 1
        if state.state == JobAlertState.State.UP and failures >= threshold(rules):
            new_state, flip = JobAlertState.State.FAILING, AlertDelivery.Kind.FAILING
    elif status == JobRun.Status.SUCCEEDED:
        failures = 0
        if state.state == JobAlertState.State.FAILING:
            new_state, flip = JobAlertState.State.UP, AlertDelivery.Kind.RECOVERED
    return failures, new_state, flip


def apply_run(
    run: dict[str, Any], state: JobAlertState, rules: list[AlertRule], now: datetime
) -> tuple[bool, str | None]:
    """Apply one finished run to its job's alert state: (applied, flip or None).

    A run that changes nothing (a success while the job is up, a cancelled run) writes
    nothing. Otherwise the conditional update on ``last_run_id`` is the claim: with several
    nodes reading the same runs, exactly one applies each; ``applied`` is False for the others
    (their ``state`` is stale: they reload it).
    """
    failures, new_state, flip = transition(state, run["status"], rules)
    if failures == state.consecutive_failures and flip is None:
        return True, None
    with transaction.atomic():
        claimed = JobAlertState.objects.filter(job_id=state.job_id, last_run_id=state.last_run_id).update(
            last_run_id=run["id"], consecutive_failures=failures, state=new_state,
            changed_at=now if flip else state.changed_at,
        )  # fmt: skip
        if claimed != 1:
            return False, None
        state.last_run_id, state.consecutive_failures, state.state = run["id"], failures, new_state
        if flip is not None and rules:
            queue_deliveries(run, flip, failures, rules, now)
    return True, flip


def queue_deliveries(run: dict[str, Any], flip: str, failures: int, rules: list[AlertRule], now: datetime) -> int:
    """One ``AlertDelivery`` per address of every rule (inside the flip's transaction)."""
    job = Job.objects.select_related("plugin", "user").get(pk=run["job_id"])
    subject, text, payload = describe(job, run, flip, failures)
    deliveries = []
    for rule in rules:
        if flip == AlertDelivery.Kind.RECOVERED and not rule.notify_recovery:
            continue
        common = {"job_id": job.pk, "run_id": run["id"], "kind": flip, "subject": subject, "next_attempt_at": now}
        for address in [a.strip() for a in rule.email.split(",") if a.strip()]:
            deliveries.append(AlertDelivery(channel=AlertDelivery.Channel.EMAIL, target=address, body=text, **common))
        if rule.webhook_url:
            deliveries.append(AlertDelivery(channel=AlertDelivery.Channel.WEBHOOK, target=rule.webhook_url,
                                            body=json.dumps(payload), **common))  # fmt: skip
    AlertDelivery.objects.bulk_create(deliveries)
    log.info("job %s %s: %d alert(s) queued", job.pk, flip, len(deliveries))
    return len(deliveries)


def _send_webhook(delivery: AlertDelivery) -> int:
    request = urllib.request.Request(
        delivery.target,
        data=delivery.body.encode(),
        headers={"Content-Type": "application/json", "User-Agent": "jobscheduler-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=config()["WEBHOOK_TIMEOUT"]) as response:
        return int(response.status)


def _send_email(delivery: AlertDelivery) -> None:
    send_mail(delivery.subject, delivery.body, None, [delivery.target], fail_silently=False)


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: RETRY_SECONDS, doubling, at most an hour."""
    return float(min(config()["RETRY_SECONDS"] * 2 ** max(attempts - 1, 0), 3600))


def deliver(delivery_id: int) -> bool:
    """Send one claimed delivery and record how it went; True when sent."""
    delivery = AlertDelivery.objects.get(pk=delivery_id)
    code: int | None = None
    error = ""
    try:
        if delivery.channel == AlertDelivery.Channel.WEBHOOK:
            code = _send_webhook(delivery)
        else:
            _send_email(delivery)
    except urllib.error.HTTPError as exc:
        code, error = exc.code, f"HTTP {exc.code} {exc.reason}"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    attempts = delivery.attempts + 1
    now = timezone.now()
    if not error:
        AlertDelivery.objects.filter(pk=delivery_id).update(
            status=AlertDelivery.Status.SENT, attempts=attempts, sent_at=now, response_code=code, last_error=""
        )
        metrics.alert_sent(delivery.channel, "sent")
        return True
    gave_up = attempts >= config()["MAX_ATTEMPTS"]
    AlertDelivery.objects.filter(pk=delivery_id).update(
        status=AlertDelivery.Status.FAILED if gave_up else AlertDelivery.Status.PENDING,
        attempts=attempts,
        response_code=code,
        last_error=error[:2000],
        next_attempt_at=now + timedelta(seconds=backoff(attempts)),
    )
    metrics.alert_sent(delivery.channel, "failed" if gave_up else "retry")
    log.warning(
        "alert %s to %s: attempt %d failed (%s)%s",
        delivery_id,
        delivery.target,
        attempts,
        error,
        "; giving up" if gave_up else "",
    )
    return False


# --- the worker ---------------------------------------------------------------------------


class AlertWorker:
    """The alert thread of one scheduler process."""

    def __init__(self, *, senders: int = 4, now: datetime | None = None) -> None:
        cfg = config()
        self.poll_seconds = float(cfg["POLL_SECONDS"])
        self.lookback = timedelta(seconds=float(cfg["LOOKBACK_SECONDS"]))
        #: (finished_at, id) of the last run read: the keyset the next pass goes on from
        self.cursor: tuple[datetime, int] = ((now or timezone.now()) - self.lookback, 0)
        self._next_sweep = (now or timezone.now()) + self.lookback
        #: per job, the newest run this worker applied or saw
        self.newest_seen: dict[int, int] = {}
        self.executor = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="jobscheduler-alert-send")
        self.seats = threading.BoundedSemaphore(senders)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def process_finished_runs(self, now: datetime) -> int:
        """Apply the runs finished since the cursor (and, every look-back, any committed late);
        returns how many flips they caused."""
        defaults = list(AlertRule.objects.filter(job__isnull=True, enabled=True))
        if not defaults and not AlertRule.objects.filter(job__isnull=False).exists():
            self.cursor = (now - SETTLE, 0)  # nobody asked for alerts: nothing to read
            return 0
        runs = JobRun.objects.filter(status__in=JobRun.FINISHED)
        if not defaults:  # only jobs whose owner asked for alerts
            runs = runs.filter(job__alert_rule__isnull=False)
        at, run_id = self.cursor
        # Runs that ended SETTLE ago: their records are committed by now (the writer batches).
        fresh = runs.filter(Q(finished_at__gt=at) | Q(finished_at=at, id__gt=run_id), finished_at__lte=now - SETTLE)
        flips = self._apply(self._rows(fresh), defaults, now, advance=True)
        if now >= self._next_sweep:
            # A writer held up (a database outage) commits runs long after they ended, behind
            # the cursor: look back once per look-back period; runs applied already are left
            # out by the query and by ``newest_seen``.
            late = runs.filter(finished_at__gte=at - self.lookback, finished_at__lte=at)
            late = late.exclude(job__alert_state__last_run_id__gte=F("id"))
            flips += self._apply(self._rows(late), defaults, now, advance=False)
            self._next_sweep = now + self.lookback
        return flips

    @staticmethod
    def _rows(runs: Any) -> list[dict[str, Any]]:
        fields = ("id", "job_id", "status", "error", "finished_at")
        return [dict(row) for row in runs.order_by("finished_at", "id").values(*fields)[:BATCH]]

    def _apply(self, rows: list[dict[str, Any]], defaults: list[AlertRule], now: datetime, *, advance: bool) -> int:
        if not rows:
            return 0
        job_ids = {row["job_id"] for row in rows}
        # three queries for the whole batch, whatever its size
        JobAlertState.objects.bulk_create([JobAlertState(job_id=j) for j in job_ids], ignore_conflicts=True)
        states = JobAlertState.objects.in_bulk(list(job_ids))
        own = {rule.job_id: rule for rule in AlertRule.objects.filter(job_id__in=job_ids)}
        flips = 0
        for row in rows:
            job_id = row["job_id"]
            if row["id"] <= self.newest_seen.get(job_id, 0):
                continue  # seen already, or older than what this node saw (a late record must not undo it)
            state = states.get(job_id)
            if state is None or state.last_run_id >= row["id"]:
                continue  # the job is gone, or another node applied this run or a newer one
            try:
                applied, flip = apply_run(row, state, rules_for(job_id, own.get(job_id), defaults), now)
                if not applied:  # another node moved this job on: reload and try once more
                    states[job_id] = state = JobAlertState.objects.get(job_id=job_id)
                    if state.last_run_id < row["id"]:
                        applied, flip = apply_run(row, state, rules_for(job_id, own.get(job_id), defaults), now)
            except Exception as exc:  # one job's trouble must not stop the others' alerts
                log.exception("alerts: run %s of job %s: %s", row["id"], job_id, exc)
                continue
            self.newest_seen[job_id] = row["id"]
            flips += flip is not None
        if advance:
            self.cursor = (rows[-1]["finished_at"], rows[-1]["id"])
        return flips

    def send_due_deliveries(self, now: datetime) -> int:
        """Claim due deliveries (a lease, so a dead node's are retried) and send them; returns how many."""
        submitted = 0
        due = AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, next_attempt_at__lte=now)
        for delivery_id, due_at in due.order_by("next_attempt_at").values_list("id", "next_attempt_at")[:50]:
            if not self.seats.acquire(blocking=False):
                break  # every sender is busy (a slow endpoint): the rest wait for the next pass
            claimed = AlertDelivery.objects.filter(
                pk=delivery_id, status=AlertDelivery.Status.PENDING, next_attempt_at=due_at
            ).update(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
            if claimed != 1:  # another node took it
                self.seats.release()
                continue
            future = self.executor.submit(_in_thread, deliver, delivery_id)
            future.add_done_callback(lambda _: self.seats.release())
            submitted += 1
        return submitted

    def run_once(self, now: datetime | None = None) -> None:
        now = now or timezone.now()
        self.process_finished_runs(now)
        self.send_due_deliveries(now)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                close_old_connections()
                self.run_once()
            except Exception as exc:  # the database is down: try again on the next pass
                log.warning("alerts: pass failed (%s: %s)", type(exc).__name__, exc)
                connection.close()
            self._stop.wait(self.poll_seconds)
        connection.close()

    def start(self) -> AlertWorker:
        self._thread = threading.Thread(target=self._loop, name="jobscheduler-alerts", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        # Deliveries in flight finish in the background (bounded by WEBHOOK_TIMEOUT); unsent ones
        # stay pending in the database for the next node.
        self.executor.shutdown(wait=False, cancel_futures=True)


def _in_thread(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    finally:
        connection.close()


def start_worker() -> AlertWorker | None:
    """Start the alert thread unless ALERTS_ENABLED is false."""
    if not config()["ENABLED"]:
        return None
    return AlertWorker().start()


__all__ = ["AlertWorker", "apply_run", "deliver", "set_job_rule", "start_worker"]
