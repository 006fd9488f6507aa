"""In a real browser: a user sets a cron schedule (the preview follows the typing, checked by
the server; a mistake shows in red; saving stores it; the card shows the next run), and cancels
a running run from its page, then runs it again.

The server and browser fixtures are test_browser.py's (``manage.py serve`` + Debian's chromium).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import playwright.sync_api as playwright_sync
import pytest

from scheduler_app import services
from scheduler_app.models import Job, JobRun
from tests.test_browser import browser, db, log_in, server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_alice_sets_a_weekday_cron_schedule_sees_the_preview_and_the_next_run(server, browser, alice, sample_plugin):  # noqa: F811
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann"}, description="greeter", activate=True))
    page = log_in(browser, server, "alice", "alice-pass")
    expect = playwright_sync.expect
    page.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    card = page.locator(f"#job-{job.pk}")
    preview = card.locator("[data-schedule-output]")
    # Before any typing: the plugin's interval, with its next five runs.
    expect(preview.locator("[data-schedule-words]")).to_have_text("every 10 seconds (the plugin's interval)")
    expect(preview.locator("[data-schedule-next] li")).to_have_count(5)

    schedule = card.locator(f'input[name="job-{job.pk}-schedule"]')
    card.locator(f'input[name="job-{job.pk}-timezone"]').fill("Europe/Paris")
    # A typo: the server's message, no times.
    schedule.fill("0 8 * *")
    expect(preview.locator("[data-schedule-error]")).to_contain_text("has 4 fields")
    expect(preview.locator("[data-schedule-next] li")).to_have_count(0)
    # Corrected: words and five weekday mornings in Paris time, as the user types.
    schedule.fill("0 8 * * 1-5")
    expect(preview.locator("[data-schedule-words]")).to_have_text("every weekday at 08:00 (Europe/Paris)")
    times = preview.locator("[data-schedule-next] time")
    expect(times).to_have_count(5)
    for iso in times.evaluate_all("els => els.map(e => e.getAttribute('datetime'))"):
        moment = datetime.fromisoformat(iso)
        assert (moment.hour, moment.minute, moment.weekday() < 5) == (8, 0, True)
        assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() in (3600, 7200)
    first_iso = times.first.get_attribute("datetime") or ""

    card.locator('button[name="save"]').click()
    expect(page.locator(".message-success")).to_contain_text("Saved")
    stored = db(lambda: Job.objects.get(pk=job.pk))
    assert (stored.schedule, stored.timezone) == ("0 8 * * 1-5", "Europe/Paris")
    card = page.locator(f"#job-{job.pk}")
    expect(card.locator(f'[data-schedule-words-for="{job.pk}"]')).to_have_text("every weekday at 08:00 (Europe/Paris)")
    # The card's next run is the preview's first time (the same instant).
    shown = card.locator(f'[data-next-run-for="{job.pk}"] time').get_attribute("datetime")
    assert shown is not None and datetime.fromisoformat(shown) == datetime.fromisoformat(first_iso)
    # Cron slots are not evenly spaced: the page must not roll a passed next run on by an interval.
    assert card.locator(f'[data-next-run-for="{job.pk}"] time').get_attribute("data-interval") == "0"
    page.screenshot(path=str(server.tmp_path / "schedule.png"))
    assert [e for e in page.console_errors if not e.startswith("Failed to load resource")] == []


def test_alice_cancels_a_running_run_from_its_page_and_runs_it_again(server, browser, alice, sample_plugin):  # noqa: F811
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 10}, description="long"))
    run = db(lambda: services.run_now(job))
    page = log_in(browser, server, "alice", "alice-pass")
    expect = playwright_sync.expect
    # the embedded scheduler picks the run up; its page offers to cancel it
    for _ in range(100):
        if db(lambda: JobRun.objects.get(pk=run.pk).status) == JobRun.Status.RUNNING:
            break
        page.wait_for_timeout(100)
    page.goto(f"{server.url}/runs/{run.pk}/")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".message-success")).to_contain_text(f"Run #{run.pk}")
    # the scheduler stops it (the plugin is told, then interrupted) and records who asked
    for _ in range(100):
        if db(lambda: JobRun.objects.get(pk=run.pk).is_finished):
            break
        page.wait_for_timeout(100)
    page.goto(f"{server.url}/runs/{run.pk}/")
    expect(page.locator("[data-run-status]")).to_have_text("cancelled")
    expect(page.locator("[data-cancelled-by]")).to_have_text("alice")
    ended = db(lambda: JobRun.objects.get(pk=run.pk))
    assert (ended.status, ended.error) == (JobRun.Status.CANCELLED, "cancelled by alice")
    assert ended.finished_at - ended.started_at < timedelta(seconds=9), "stopped, not finished"
    # Run again: a new manual run of the same job, and its page
    page.get_by_role("button", name="Run again").click()
    expect(page.locator(".message-success")).to_contain_text("queued")
    again = db(lambda: JobRun.objects.filter(job=job).exclude(pk=run.pk).get())
    assert page.url.endswith(f"/runs/{again.pk}/") and again.trigger == JobRun.Trigger.MANUAL
