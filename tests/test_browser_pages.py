"""The users' pages as a demanding user sees them, in a real browser against a real server.

Phones (no page wider than 390 px), times that tick and are shown in the browser's own zone
with a label, pages that follow runs without a reload, logout ending open live logs, unsaved
edits never lost silently, the log panel narrowed to one run or one configuration, secrets
shown as set with a Clear action, messages that cover nothing. Same server and browser
fixtures as tests/test_browser.py.
"""

from __future__ import annotations

import re
import time
from typing import Any

import playwright.sync_api as playwright_sync
import pytest

from scheduler_app import services
from scheduler_app.models import Job, JobRun, Plugin
from tests.test_browser import Server, browser, db, server

__all__ = ["browser", "server"]  # the same fixtures as tests/test_browser.py

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
expect = playwright_sync.expect

PHONE = {"width": 390, "height": 844}
LAB = "plugins.lab_plugin@v0_1_0.plugin.Plugin"
PROD = "plugins.prod_plugin@v0_1_0.plugin.Plugin"
STABLE = "plugins.stable_plugin@v0_1_0.plugin.Plugin"


def open_page(browser: Any, server: Server, username: str, password: str, **context: Any) -> Any:
    """A fresh browser context (its own cookies, viewport, time zone) logged in as ``username``."""
    ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **context})
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    return page


def width(page: Any) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def wait_finished(run_id: int, timeout: float = 30) -> JobRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = db(lambda: JobRun.objects.get(pk=run_id))
        if run.is_finished:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


def test_no_page_is_wider_than_a_phone(server, browser, alice, sample_plugin):
    long_word = "x" * 200
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 1}, description=long_word))
    lab = db(lambda: Plugin.objects.create(name="Lab", package=LAB, interval=3600))
    failing = db(lambda: services.create_job(alice, lab, {"failure_rate": 1, "samples": 1}, description="flaky"))
    db(lambda: Plugin.objects.create(name="Stable", package=STABLE, interval=3600))
    run = wait_finished(db(lambda: services.run_now(failing)).pk)
    assert run.status == "failed"
    db(lambda: services.run_now(Job.objects.get(pk=job.pk)))

    page = browser.new_page(viewport=PHONE)
    page.goto(f"{server.url}/accounts/login/")
    assert width(page) <= 390, "login"
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass")
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    for path in (
        "/",
        f"/plugins/{sample_plugin.pk}/",
        f"/jobs/{job.pk}/runs/",
        f"/runs/{run.pk}/",
        f"/jobs/{job.pk}/history/",
    ):
        page.goto(f"{server.url}{path}")
        expect(page.locator("h1")).to_be_visible()
        assert width(page) <= 390, path
    # the header's "Log out" is on the screen, not past its edge
    box = page.get_by_role("button", name="Log out").bounding_box()
    assert box["x"] + box["width"] <= 390

    # Required inputs of a schema form carry a marker.
    page.goto(f"{server.url}/plugins/{db(lambda: Plugin.objects.get(package=STABLE).pk)}/")
    expect(page.locator("#new label.rjf-required").first).to_be_visible()  # the services' names
    assert width(page) <= 390, "a schema form with nested lists"
    marker = page.locator("#new label.rjf-required").first.evaluate("e => getComputedStyle(e, '::after').content")
    assert "*" in marker

    # A laptop's window too: the dashboard's columns (with the recent-runs chart) fit 1280 px.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{server.url}/")
    expect(page.locator(".spark").first).to_be_visible()
    assert width(page) <= 1280, "dashboard at 1280 px"


def test_times_tick_and_are_shown_in_the_browsers_zone_with_its_label(server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 1}, activate=True))
    run = wait_finished(db(lambda: services.run_now(job)).pk)
    page = open_page(browser, server, "alice", "alice-pass", timezone_id="America/New_York")
    page.clock.install()  # time flows as usual; fast_forward below jumps it without waiting
    page.reload()

    # The dashboard's "last run" ("2 s ago") and "next run" ("in 5 s") move on by themselves.
    last = page.locator(f'[data-last-run-for="{job.pk}"] time')
    before = last.inner_text()
    expect(last).not_to_have_text(before, timeout=5_000)
    nxt = page.locator(f'[data-next-run-for="{job.pk}"] time')
    first = nxt.inner_text()
    assert re.fullmatch(r"in \d+ s|now", first), first
    expect(nxt).not_to_have_text(first, timeout=5_000)
    # A next run that passes rolls on to the following slot, never "ago".
    page.clock.fast_forward("00:11")
    assert re.fullmatch(r"in \d+ s|now", nxt.inner_text()), nxt.inner_text()

    # Absolute times: the browser's zone, labelled (New York is on EST in November, EDT in summer).
    page.goto(f"{server.url}/jobs/{job.pk}/runs/")
    slot = page.locator("tbody td[data-label=Slot] time").first.inner_text()
    assert re.search(r" E[SD]T$", slot), slot
    page.goto(f"{server.url}/runs/{run.pk}/")
    started = page.locator('[data-run-field="started_at"]').inner_text()
    assert re.search(r" E[SD]T$", started), started
    # the history page's changes too (the job's creation is the first)
    page.goto(f"{server.url}/jobs/{job.pk}/history/")
    changed = page.locator("#audit tbody time").first.inner_text()
    assert re.search(r" E[SD]T$", changed), changed
    page.goto(f"{server.url}/runs/{run.pk}/")
    # the log's times are the same zone's, and say so
    expect(page.locator("[data-zone-label]")).to_contain_text("America/New_York")
    log_clock = page.locator(".logline time").first.inner_text()
    local_clock = page.evaluate(
        "iso => new Date(iso).toLocaleTimeString('en-GB', {timeZone: 'America/New_York', hour12: false})",
        page.locator(".logline time").first.get_attribute("datetime"),
    )
    assert log_clock == local_clock
    assert (
        started.split(" ")[1][:5]
        == page.evaluate(
            "iso => new Date(iso).toLocaleTimeString('en-GB', {timeZone: 'America/New_York', hour12: false})",
            run.started_at.isoformat(),
        )[:5]
    )


def test_a_run_page_follows_the_run_to_its_end(server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 3}))
    page = open_page(browser, server, "alice", "alice-pass")
    run = db(lambda: services.run_now(job))
    page.goto(f"{server.url}/runs/{run.pk}/")
    expect(page.locator(".logview-state")).to_have_text("live")
    expect(page.locator('[data-run-field="finished_at"]')).to_have_text("—")
    expect(page.locator("[data-run-status]")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator('[data-run-field="finished_at"]')).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
    expect(page.locator('[data-run-field="duration"]')).to_have_text(re.compile(r"^\d+\.\d+ s$"))
    expect(page.locator('[data-run-field="started_at"]')).not_to_have_text("—")
    expect(page.locator(".logview-state")).to_have_text("complete")
    assert page.console_errors == []


def test_the_dashboards_last_and_next_run_update_without_a_reload(server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 1}))
    page = open_page(browser, server, "alice", "alice-pass")
    expect(page.locator(f'[data-last-run-for="{job.pk}"]')).to_have_text("never ran")
    expect(page.locator(f'[data-next-run-for="{job.pk}"]')).to_have_text("—")
    db(lambda: services.activate_job(Job.objects.get(pk=job.pk)))
    run = db(lambda: services.run_now(Job.objects.get(pk=job.pk)))
    badge = page.locator(f'[data-last-run-for="{job.pk}"] [data-run-id]')
    expect(badge).to_have_text("succeeded", timeout=20_000)
    # this run, or a scheduled one after it (the job is active now)
    assert int(badge.get_attribute("data-run-id")) >= run.pk
    expect(page.locator(f'[data-next-run-for="{job.pk}"] time')).to_have_text(re.compile(r"in \d+ s|now"))


def test_logging_out_in_another_tab_ends_the_open_live_log(server, browser, alice, sample_plugin):
    db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 1}, activate=True))
    watching = open_page(browser, server, "alice", "alice-pass")
    watching.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    expect(watching.locator(".logview-state")).to_have_text("live")
    other_tab = watching.context.new_page()
    other_tab.goto(f"{server.url}/")
    other_tab.get_by_role("button", name="Log out").click()
    other_tab.wait_for_url(re.compile(r"/accounts/login/"))
    logged_out = time.monotonic()
    expect(watching.locator(".logview-state")).to_have_text("refused: log in to see this log", timeout=10_000)
    assert time.monotonic() - logged_out < 8
    count = watching.locator(".logline[data-id]").count()
    watching.wait_for_timeout(3_000)  # the job runs every 10 s: nothing more arrives
    assert watching.locator(".logline[data-id]").count() == count


def test_unsaved_edits_are_saved_before_run_now_and_leaving_asks_first(server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 1}, description="greeter"))
    page = open_page(browser, server, "alice", "alice-pass")
    page.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    card = page.locator(f"#job-{job.pk}")
    expect(page.locator(".logview-state")).to_have_text("live")

    # Leaving with unsaved edits: the browser asks; dismissing stays on the page with the edit.
    card.locator('input[name="rjf§name"]').fill("Bea")
    expect(card.locator("[data-unsaved-note]")).to_be_visible()
    asked: list[str] = []

    def on_dialog(dialog: Any) -> None:
        asked.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.locator(".crumbs a").first.click()
    page.wait_for_timeout(1_000)
    assert asked == ["beforeunload"]
    assert page.url.endswith(f"/plugins/{sample_plugin.pk}/")
    page.remove_listener("dialog", on_dialog)

    # Run now with the edit: saved first, and the run uses it.
    card.get_by_role("button", name="Run now").click()
    expect(page.locator(f"#job-{job.pk} .message-success")).to_contain_text("Saved “greeter”. Run #")
    assert db(lambda: Job.objects.get(pk=job.pk).config) == {"name": "Bea", "times": 1}
    expect(page.locator(".logline .msg").filter(has_text="Hello, Bea! (1/1)")).to_have_count(1, timeout=30_000)
    # The message sits inside the card it is about: the page's title and crumbs stay uncovered.
    crumbs = page.locator(".crumbs").bounding_box()
    message = page.locator(f"#job-{job.pk} .messages").bounding_box()
    assert message["y"] >= crumbs["y"] + crumbs["height"]


def test_the_log_panel_shows_one_run_or_one_configuration(server, browser, alice, sample_plugin):
    one = db(lambda: services.create_job(alice, sample_plugin, {"name": "One", "times": 3}, description="first"))
    two = db(lambda: services.create_job(alice, sample_plugin, {"name": "Two", "times": 3}, description="second"))
    page = open_page(browser, server, "alice", "alice-pass")
    page.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    expect(page.locator(".logview-state")).to_have_text("live")
    run_one = db(lambda: services.run_now(Job.objects.get(pk=one.pk)))
    run_two = db(lambda: services.run_now(Job.objects.get(pk=two.pk)))
    lines = page.locator(".logline[data-id]")
    expect(lines.filter(has_text="done")).to_have_count(2, timeout=30_000)
    # overlapping runs: one heading per run, not one at every switch
    expect(page.locator(".is-run-header")).to_have_count(2)

    page.locator("[data-filter]").select_option(f"run:{run_two.pk}")
    visible = page.locator(".logline[data-id]:visible")
    expect(visible.filter(has_text="Hello, Two")).to_have_count(3)
    expect(visible.filter(has_text="Hello, One")).to_have_count(0)
    page.locator("[data-filter]").select_option(f"job:{one.pk}")
    expect(visible.filter(has_text="Hello, One")).to_have_count(3)
    expect(visible.filter(has_text="Hello, Two")).to_have_count(0)
    # a run chip's "only" button narrows to that run
    page.locator(f'[data-run-chip="{run_one.pk}"] .runchip-only').click()
    expect(visible.filter(has_text="Hello, One")).to_have_count(3)
    expect(page.locator("[data-filter]")).to_have_value(f"run:{run_one.pk}")
    page.locator("[data-filter]").select_option("all")
    expect(visible.filter(has_text="Hello,")).to_have_count(6)


def test_a_saved_secret_shows_as_set_and_can_be_cleared(server, browser, alice):
    prod = db(lambda: Plugin.objects.create(name="Prod", package=PROD, interval=3600))
    job = db(lambda: services.create_job(alice, prod, {"token": "tok-123456"}, description="deploy"))
    page = open_page(browser, server, "alice", "alice-pass")
    page.goto(f"{server.url}/plugins/{prod.pk}/")
    card = page.locator(f"#job-{job.pk}")
    assert "tok-123456" not in page.content()
    expect(card.locator('[data-secret="[\\"token\\"]"] [data-secret-state]')).to_have_text("set")
    card.get_by_label("Clear on save").check()
    card.locator('button[name="save"]').click()
    expect(page.locator(".message-success")).to_contain_text("Saved")
    expect(page.locator(f"#job-{job.pk}").locator("[data-secret-state]")).to_have_text("not set")
    assert db(lambda: Job.objects.get(pk=job.pk).config["token"]) == ""


def test_disabled_plugins_and_stale_configs_are_shown_as_such(server, browser, alice, sample_plugin):
    lab = db(lambda: Plugin.objects.create(name="Lab", package=LAB, interval=3600))
    off = db(lambda: services.create_job(alice, lab, {}, description="paused lab"))
    stale = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann"}, description="stale"))
    db(lambda: Job.objects.filter(pk=stale.pk).update(config={"name": "Ann", "times": 99}))
    db(lambda: Plugin.objects.filter(pk=lab.pk).update(enabled=False))
    page = open_page(browser, server, "alice", "alice-pass")
    expect(page.locator(f"#plugin-{lab.pk} [data-plugin-disabled]")).to_have_text("disabled by the operators")
    expect(page.locator(f"#plugin-{lab.pk}")).to_contain_text("paused lab")

    page.goto(f"{server.url}/plugins/{lab.pk}/")
    expect(page.locator(".alert[data-plugin-disabled]")).to_be_visible()
    card = page.locator(f"#job-{off.pk}")
    expect(card.get_by_role("button", name="Activate")).to_be_disabled()
    expect(card.get_by_role("button", name="Run now")).to_be_disabled()

    page.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    card = page.locator(f"#job-{stale.pk}")
    expect(card.locator("[data-config-problem]")).to_contain_text("no longer fits")
    expect(card.get_by_role("button", name="Activate")).to_be_disabled()
    card.get_by_role("button", name="Run now").click()
    expect(page.locator(".message-error")).to_contain_text("no longer fits the plugin")
    assert db(lambda: JobRun.objects.count()) == 0


def test_the_admin_lists_fit_1280_px_and_show_seconds(staff, server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 1}, description="greeter"))
    wait_finished(db(lambda: services.run_now(job)).pk)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/admin/login/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "staff-pass")
    page.click("input[type=submit]")
    for path in ("jobrun", "plugin", "job", "schedulernode"):
        page.goto(f"{server.url}/admin/scheduler_app/{path}/")
        results = page.locator("#changelist .results")
        sizes = results.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert sizes[0] <= sizes[1], (path, sizes)
        assert width(page) <= 1280, path
    page.goto(f"{server.url}/admin/scheduler_app/jobrun/")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", page.locator("td.field-slot").first.inner_text())
    # A node name (host:pid:random) wraps after its colons, never inside a part: each part's
    # text sits on one line.
    node = page.locator("td.field-node_display").first
    assert node.inner_text().count(":") == 2
    parts_lines = node.evaluate(
        """td => [...td.childNodes].filter(n => n.nodeType === 3).map(n => {
            const r = document.createRange(); r.selectNodeContents(n); return r.getClientRects().length; })"""
    )
    assert parts_lines and all(lines == 1 for lines in parts_lines), parts_lines
