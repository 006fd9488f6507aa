"""A user sets a cron schedule in a real browser: the preview follows the typing (server-side
validation), a mistake shows in red, saving stores it, and the card shows the next run.

The server and browser fixtures are test_browser.py's (``manage.py serve`` + Debian's chromium).
"""

from __future__ import annotations

from datetime import datetime

import playwright.sync_api as playwright_sync
import pytest

from scheduler_app import services
from scheduler_app.models import Job
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
