"""Failure alerts: one message when a job starts failing and one when it recovers, by email
and webhook, sent from the scheduler's alert thread, retried with backoff, each delivery
recorded; a dead webhook never slows runs."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.test import override_settings
from django.utils import timezone

from scheduler_app import alerts, services
from scheduler_app.models import AlertDelivery, AlertRule, Job, JobAlertState, JobRun
from tests.engine_support import probe_job, probe_plugin, runs_of, schedulers, user
from tests.processes import wait_until

__all__ = ["schedulers"]


class Receiver:
    """A local webhook endpoint: records each JSON POST, answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [item["event"] for item in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """Accepts connections and never answers: the worst kind of dead webhook."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(50)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


def finish(job: Job, status: str, at: Any = None) -> JobRun:
    # ended a little while ago: the worker reads runs once the writer has surely committed them
    now = at or timezone.now() - alerts.SETTLE - timedelta(milliseconds=500)
    return JobRun.objects.create(
        job=job, slot=now, status=status, started_at=now, finished_at=now, error="boom" if status != "succeeded" else ""
    )


FAST_ALERTS = {
    "ENABLED": True,
    "POLL_SECONDS": 0.1,
    "LOOKBACK_SECONDS": 60.0,
    "RETRY_SECONDS": 0.2,
    "MAX_ATTEMPTS": 3,
    "WEBHOOK_TIMEOUT": 1.0,
    "SITE_URL": "https://jobs.example.com",
}


@pytest.fixture
def fast_alerts() -> Iterator[None]:
    with override_settings(ALERTS=FAST_ALERTS):
        yield


def drain(worker: alerts.AlertWorker) -> None:
    """One pass, then wait for the senders it started."""
    worker.run_once()
    worker.executor.shutdown(wait=True)
    worker.executor = alerts.ThreadPoolExecutor(max_workers=4)


# --- the rules, against the real database ------------------------------------------------------

committed_db = pytest.mark.django_db(transaction=True)


@committed_db
def test_it_alerts_once_when_failing_and_once_on_recovery(fast_alerts, receiver, sample_plugin):
    alice = user("alice")
    job = services.create_job(alice, sample_plugin, {})
    AlertRule.objects.create(job=job, email="alice@example.com", webhook_url=receiver.url)
    worker = alerts.AlertWorker(now=timezone.now() - timedelta(seconds=5))
    for _ in range(3):
        finish(job, "failed")
    drain(worker)
    drain(worker)  # read again: nothing new
    assert receiver.events() == ["job.failing"]
    assert receiver.received[0]["text"].startswith("job ")
    assert "is failing 1 times" not in receiver.received[0]["text"]
    assert "https://jobs.example.com/runs/" in receiver.received[0]["text"]
    assert [m.subject for m in mail.outbox] == [f"[jobscheduler] job {job.pk} is failing"]
    finish(job, "succeeded")
    finish(job, "succeeded")
    drain(worker)
    assert receiver.events() == ["job.failing", "job.recovered"]
    assert len(mail.outbox) == 2
    sent = AlertDelivery.objects.filter(status="sent")
    assert sorted(sent.values_list("channel", "kind")) == [
        ("email", "failing"), ("email", "recovered"), ("webhook", "failing"), ("webhook", "recovered")
    ]  # fmt: skip
    assert set(sent.values_list("response_code", flat=True)) == {None, 200}


@committed_db
def test_it_waits_for_n_failures_in_a_row(fast_alerts, receiver, sample_plugin):
    job = services.create_job(user("alice"), sample_plugin, {})
    AlertRule.objects.create(job=job, webhook_url=receiver.url, after_failures=3)
    worker = alerts.AlertWorker(now=timezone.now() - timedelta(seconds=5))
    finish(job, "failed")
    finish(job, "failed")
    finish(job, "succeeded")  # the count starts again
    finish(job, "failed")
    finish(job, "timed_out")
    drain(worker)
    assert receiver.events() == []
    assert JobAlertState.objects.get(job=job).consecutive_failures == 2
    finish(job, "lost")
    drain(worker)
    assert receiver.events() == ["job.failing"]
    assert "3 times in a row" in receiver.received[0]["text"]


@committed_db
def test_two_nodes_reading_the_same_runs_alert_once(fast_alerts, receiver, sample_plugin):
    job = services.create_job(user("alice"), sample_plugin, {})
    AlertRule.objects.create(job=job, webhook_url=receiver.url)
    start = timezone.now() - timedelta(seconds=5)
    one, two = alerts.AlertWorker(now=start), alerts.AlertWorker(now=start)
    finish(job, "failed")
    drain(one)
    drain(two)
    finish(job, "succeeded")
    drain(two)
    drain(one)
    assert receiver.events() == ["job.failing", "job.recovered"]


@committed_db
def test_operators_defaults_apply_to_jobs_without_their_own_rule(fast_alerts, receiver, sample_plugin):
    alice, bob = user("alice"), user("bob")
    plain = services.create_job(alice, sample_plugin, {})
    opted_out = services.create_job(bob, sample_plugin, {})
    AlertRule.objects.create(job=None, webhook_url=receiver.url)
    AlertRule.objects.create(job=opted_out, enabled=False)
    worker = alerts.AlertWorker(now=timezone.now() - timedelta(seconds=5))
    finish(plain, "failed")
    finish(opted_out, "failed")
    drain(worker)
    assert [item["job"]["id"] for item in receiver.received] == [plain.pk]


@committed_db
def test_a_failing_endpoint_is_retried_with_backoff_then_given_up(fast_alerts, sample_plugin):
    broken = Receiver(status=500)
    try:
        job = services.create_job(user("alice"), sample_plugin, {})
        AlertRule.objects.create(job=job, webhook_url=broken.url)
        worker = alerts.AlertWorker(now=timezone.now() - timedelta(seconds=5))
        finish(job, "failed")
        drain(worker)
        delivery = AlertDelivery.objects.get()
        assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, 500)
        assert delivery.last_error.startswith("HTTP 500")
        assert delivery.next_attempt_at > timezone.now()  # not again at once: backoff
        drain(worker)
        assert AlertDelivery.objects.get().attempts == 1  # still waiting
        wait_until(lambda: (drain(worker), AlertDelivery.objects.get().status == "failed")[1], 10, "giving up")
        assert AlertDelivery.objects.get().attempts == 3 == len(broken.received)
    finally:
        broken.close()


@committed_db
def test_a_run_recorded_late_is_caught_by_the_look_back(fast_alerts, receiver, sample_plugin):
    alice = user("alice")
    steady, delayed = services.create_job(alice, sample_plugin, {}), services.create_job(alice, sample_plugin, {})
    for job in (steady, delayed):
        AlertRule.objects.create(job=job, webhook_url=receiver.url)
    # claimed (rows exist) but their end is recorded late, as when the writer waits out a database outage
    older_of_steady = JobRun.objects.create(job=steady, slot=timezone.now() - timedelta(minutes=1), status="running")
    late = JobRun.objects.create(job=delayed, slot=timezone.now() - timedelta(seconds=30), status="running")
    worker = alerts.AlertWorker(now=timezone.now() - timedelta(seconds=5))
    finish(steady, "succeeded")
    drain(worker)  # the cursor is past this success now
    ended = timezone.now() - timedelta(seconds=20)
    for run in (late, older_of_steady):
        JobRun.objects.filter(pk=run.pk).update(status="failed", started_at=ended, finished_at=ended)
    drain(worker)
    assert receiver.events() == []  # the pass from the cursor does not look back ...
    worker._next_sweep = timezone.now()
    drain(worker)
    # ... the sweep does, once per look-back; steady's older failure does not undo its newer success
    assert [(e["event"], e["job"]["id"]) for e in receiver.received] == [("job.failing", delayed.pk)]


@committed_db
def test_nothing_is_read_while_nobody_asked_for_alerts(sample_plugin, django_assert_num_queries):
    job = services.create_job(user("alice"), sample_plugin, {})
    finish(job, "failed")
    worker = alerts.AlertWorker(now=timezone.now() - timedelta(seconds=5))
    with django_assert_num_queries(2):  # the defaults, and whether any job has a rule
        assert worker.process_finished_runs(timezone.now()) == 0
    assert not JobAlertState.objects.exists()


# --- through a real scheduler process -----------------------------------------------------------


@committed_db
@pytest.mark.slow
def test_a_real_scheduler_alerts_on_failure_and_recovery_and_a_dead_webhook_slows_no_run(
    schedulers, receiver, silent_endpoint
):
    plugin = probe_plugin(interval=1)
    alice, bob = user("alice"), user("bob")
    flaky = probe_job(alice, plugin, mode="fail", message="disk full")
    AlertRule.objects.create(job=flaky, webhook_url=receiver.url)
    # bob's alerts go to an endpoint that never answers; his runs and alice's must not notice
    doomed = probe_job(bob, plugin, mode="fail")
    AlertRule.objects.create(job=doomed, webhook_url=silent_endpoint)
    steady = probe_job(user("carol"), plugin)
    schedulers.start(
        "alerts",
        ALERTS_POLL_SECONDS="0.2",
        ALERTS_RETRY_SECONDS="0.5",
        ALERTS_WEBHOOK_TIMEOUT="2",
        ALERTS_MAX_ATTEMPTS="4",
    )
    wait_until(lambda: receiver.events() == ["job.failing"], 20, "the failing alert")
    assert "disk full" in receiver.received[0]["text"]
    services.update_job(flaky, config={"mode": "fast"})
    wait_until(lambda: receiver.events() == ["job.failing", "job.recovered"], 20, "the recovery alert")
    wait_until(lambda: AlertDelivery.objects.filter(job=doomed, attempts__gte=2).exists(), 20, "a retried delivery")
    since = timezone.now()
    wait_until(lambda: len(runs_of(steady, slot__gte=since, status="succeeded")) >= 4, 20, "more steady runs")
    assert receiver.events() == ["job.failing", "job.recovered"]  # once each, whatever runs came after
    doomed_delivery = AlertDelivery.objects.get(job=doomed)
    assert "timed out" in doomed_delivery.last_error.lower()
    # the dead endpoint costs each attempt 2 s in the alert thread, never the runs
    lags = [(r.started_at - r.slot).total_seconds() for r in runs_of(steady, slot__gte=since - timedelta(seconds=5))]
    assert lags and max(lags) < 1.5, lags  # blocking would add the 2 s timeout per attempt


@committed_db
def test_operators_see_every_delivery_in_the_admin(fast_alerts, receiver, sample_plugin, staff):
    from django.test import Client

    job = services.create_job(user("alice"), sample_plugin, {})
    AlertRule.objects.create(job=job, webhook_url=receiver.url)
    worker = alerts.AlertWorker(now=timezone.now() - timedelta(seconds=5))
    finish(job, "failed")
    drain(worker)
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/scheduler_app/alertdelivery/?status__exact=sent")
    assert page.status_code == 200
    assert receiver.url.encode() in page.content and b"started failing" in page.content
