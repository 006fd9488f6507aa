"""The users' pages in a real browser against a real server process.

``manage.py serve`` with the scheduler embedded runs on the test database (committed data:
transactional tests); Playwright drives Debian's chromium. The flow is what a user does:
log in, edit a config (an invalid value shows its error on the field, then a valid one
saves), activate, run now, watch the log arrive live (escaped, ANSI coloured), clone, delete;
bob can open neither alice's pages nor her stream; a restarted server is reconnected to
without losing or repeating a line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import playwright.sync_api as playwright_sync
import pytest
from django.db import connection

from scheduler_app import services
from scheduler_app.models import Job, JobRun, Plugin
from tests.processes import ManagedProcess, free_port, manage, wait_for_port

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T = TypeVar("T")
_db_thread = ThreadPoolExecutor(max_workers=1)


def db(fn: Callable[[], T]) -> T:
    """Run ORM code off the thread where Playwright's event loop lives (Django refuses it there)."""

    def call() -> T:
        try:
            return fn()
        finally:
            connection.close()  # the thread outlives the test; its connection must not

    return _db_thread.submit(call).result()


class Server:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.tmp_path = tmp_path
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        self.process = manage(
            ["serve", "--port", str(self.port)],
            self.tmp_path / f"serve-{self.starts}.log",
            SCHEDULER_EMBEDDED="true",
            SCHEDULER_RECONCILE_SECONDS="1",
        )
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        # Graceful shutdown is the engine's tests' business; here a few seconds are enough.
        if self.process is not None:
            self.process.stop(timeout=5)
            self.process = None

    def crash(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("serve-*.log")))


@pytest.fixture
def server(tmp_path: Path, alice, bob, sample_plugin) -> Iterator[Server]:
    server = Server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(browser: Any, server: Server, username: str, password: str) -> Any:
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.set_default_timeout(20_000)
    # Script errors and Content-Security-Policy violations fail the flows that check them.
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(f"{server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    return page


def test_alice_edits_activates_runs_watches_clones_and_deletes(server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 2}, description="greeter"))
    page = log_in(browser, server, "alice", "alice-pass")
    expect = playwright_sync.expect

    # The dashboard lists the plugin with the job.
    expect(page.locator(f"#plugin-{sample_plugin.pk}")).to_contain_text("greeter")
    page.click(f"#plugin-{sample_plugin.pk} h2 a")
    card = page.locator(f"#job-{job.pk}")
    expect(page.locator(".logview-state")).to_have_text("live")

    # An invalid value: Pydantic's message under that input, nothing saved.
    card.locator('input[name="rjf§name"]').fill("")
    card.locator('button[name="save"]').click()
    card = page.locator(f"#job-{job.pk}")
    expect(card.locator(".rjf-error-text")).to_contain_text("at least 1 character")
    assert db(lambda: Job.objects.get(pk=job.pk).config) == {"name": "Ann", "times": 2}

    # A valid value saves. The name carries markup: it must come back as text everywhere.
    evil = "<script>window.pwned=1</script>"
    card.locator('input[name="rjf§name"]').fill(evil)
    card.locator('button[name="save"]').click()
    expect(page.locator(".message-success")).to_contain_text("Saved")
    assert db(lambda: Job.objects.get(pk=job.pk).config) == {"name": evil, "times": 2}

    # Activate: the badge says so.
    page.locator(f"#job-{job.pk}").get_by_role("button", name="Activate").click()
    expect(page.locator(f"#job-{job.pk} [data-active]")).to_have_text("active")
    assert db(lambda: Job.objects.get(pk=job.pk).active)

    # Run now: the lines arrive live in the log view, as text, tagged with their run.
    page.locator(f"#job-{job.pk}").get_by_role("button", name="Run now").click()
    expect(page.locator(".message-success")).to_contain_text("queued")
    run_id = db(lambda: JobRun.objects.filter(job_id=job.pk, trigger="manual").latest("id").pk)
    lines = page.locator(f'.logline[data-run="{run_id}"]')
    expect(lines.filter(has_text="(2/2)")).to_have_count(1, timeout=30_000)
    expect(lines.filter(has_text="(1/2)").locator(".msg")).to_have_text(f"Hello, {evil}! (1/2)")
    expect(lines.first.locator(".run-tag")).to_contain_text(f"#{run_id}")
    expect(lines.filter(has_text="done")).to_have_count(1, timeout=30_000)
    assert page.evaluate("window.pwned") is None
    assert page.locator(".logline script").count() == 0
    # the job card's "last run" follows the run as it finishes
    expect(page.locator(f'[data-last-run-for="{job.pk}"] .badge')).to_have_text("succeeded", timeout=30_000)

    # The pause control stops following the tail.
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    page.get_by_role("button", name="Resume").click()

    # Clone, then delete the copy after confirming.
    page.locator(f"#job-{job.pk}").get_by_role("button", name="Clone").click()
    expect(page.locator(".message-success")).to_contain_text("Cloned")
    copy_id = db(lambda: Job.objects.filter(user=alice).exclude(pk=job.pk).get().pk)
    expect(page.locator(f"#job-{copy_id}")).to_contain_text("Copy of greeter")
    # two configurations now: the active one's settings are open, and so are the copy's (linked)
    expect(page.locator(f"#job-{copy_id} details.job-config")).to_have_attribute("open", "")
    expect(page.locator(f"#job-{job.pk} details.job-config")).to_have_attribute("open", "")
    page.locator(f"#job-{copy_id}").get_by_role("link", name="Delete…").click()
    expect(page.locator("h1")).to_have_text("Delete this configuration?")
    page.get_by_role("button", name="Delete").click()
    expect(page.locator(".message-success")).to_contain_text("Deleted")
    expect(page.locator(f"#job-{copy_id}")).to_have_count(0)
    assert db(lambda: list(Job.objects.filter(user=alice).values_list("pk", flat=True))) == [job.pk]

    # The run page has the whole log and the run's status.
    page.goto(f"{server.url}/runs/{run_id}/")
    expect(page.locator("[data-run-status]")).to_have_text("succeeded")
    # debug, 2 greetings, done (and, on a slow machine, the scheduler's note of a slot it skipped
    # because this run was still going: the job is active)
    plugin_lines = page.locator(".logline").filter(has_not_text="skipped: this run is still going")
    expect(plugin_lines).to_have_count(4)
    # (the invalid save answered 400 on purpose; anything else is a script error or a CSP refusal)
    assert [e for e in page.console_errors if not e.startswith("Failed to load resource")] == []


def test_ansi_colours_render_as_colour_not_codes(server, browser, alice):
    plugin = db(
        lambda: Plugin.objects.create(name="Prod", package="plugins.prod_plugin@v0_1_0.plugin.Plugin", interval=3600)
    )
    job = db(lambda: services.create_job(alice, plugin, {}, description="deploy"))
    page = log_in(browser, server, "alice", "alice-pass")
    page.goto(f"{server.url}/plugins/{plugin.pk}/")
    expect = playwright_sync.expect
    expect(page.locator(".logview-state")).to_have_text("live")
    page.locator(f"#job-{job.pk}").get_by_role("button", name="Run now").click()
    deployed = page.locator(".logline .msg .ansi-32")
    expect(deployed).to_have_text(re.compile(r"deployed 1\.0\.0"), timeout=30_000)
    colour = deployed.evaluate("e => getComputedStyle(e).color")
    assert colour != page.locator(".logline .msg").first.evaluate("e => getComputedStyle(e).color")
    assert "\x1b" not in page.locator(".logview-lines").inner_text()
    assert "[36m" not in page.locator(".logview-lines").inner_text()


def test_bob_cannot_open_alices_pages_or_stream(server, browser, alice, bob, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {}, description="private"))
    page = log_in(browser, server, "bob", "bob-pass")
    for path in (
        f"/users/{alice.pk}/plugins/{sample_plugin.pk}/",
        f"/jobs/{job.pk}/runs/",
        f"/jobs/{job.pk}/delete/",
        f"/?user={alice.pk}",
    ):
        response = page.goto(f"{server.url}{path}")
        assert response.status == 404, path
    page.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    assert "private" not in page.content()
    code = page.evaluate(
        """path => new Promise(resolve => {
            const ws = new WebSocket(`ws://${location.host}${path}`);
            ws.onmessage = e => resolve("message: " + e.data);
            ws.onclose = e => resolve(e.code);
        })""",
        f"/ws/logs/{sample_plugin.pk}/{alice.pk}/",
    )
    assert code == 4403
    # bob's own stream works
    playwright_sync.expect(page.locator(".logview-state")).to_have_text("live")


def test_the_view_reconnects_after_a_restart_and_resumes_without_gap_or_duplicate(
    server, browser, alice, sample_plugin
):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 2}, description="greeter"))
    page = log_in(browser, server, "alice", "alice-pass")
    page.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    expect = playwright_sync.expect
    state = page.locator(".logview-state")
    expect(state).to_have_text("live")
    page.locator(f"#job-{job.pk}").get_by_role("button", name="Run now").click()
    expect(page.locator(".logline[data-id]").filter(has_text="done")).to_have_count(1, timeout=30_000)
    per_run = page.locator(".logline[data-id]").count()

    server.crash()
    expect(state).to_contain_text("retrying", timeout=15_000)
    # While the browser is away, a run writes lines it has not seen: it must get them on resume.
    db(lambda: services.run_now(Job.objects.get(pk=job.pk)))
    server.start()
    expect(state).to_have_text("live", timeout=30_000)
    expect(page.locator(".logline.is-marker").last).to_contain_text("resumed after line")
    expect(page.locator(".logline[data-id]").filter(has_text="done")).to_have_count(2, timeout=30_000)
    ids = page.eval_on_selector_all(".logline[data-id]", "els => els.map(e => Number(e.dataset.id))")
    assert len(ids) == len(set(ids)) == 2 * per_run
    assert ids == sorted(ids)
    messages = page.eval_on_selector_all(".logline[data-id] .msg", "els => els.map(e => e.textContent)")
    hellos = [m for m in messages if m.startswith("Hello")]
    assert hellos == ["Hello, Ann! (1/2)", "Hello, Ann! (2/2)"] * 2, json.dumps(messages)


def test_a_view_told_it_fell_behind_reconnects_at_once_and_catches_up(server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 2}, description="greeter"))
    page = log_in(browser, server, "alice", "alice-pass")
    page.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    expect = playwright_sync.expect
    state = page.locator(".logview-state")
    expect(state).to_have_text("live")
    page.locator(f"#job-{job.pk}").get_by_role("button", name="Run now").click()
    expect(page.locator(".logline[data-id]").filter(has_text="done")).to_have_count(1, timeout=30_000)
    per_run = page.locator(".logline[data-id]").count()

    # What the server sends a socket whose queue passed LIVE_LOG_VIEWER_BUFFER (live_hub.Viewer).
    page.evaluate("""() => {
        const view = window.jobschedulerLogViews[0];
        view.handle({type: "behind"});
    }""")
    expect(page.locator(".logline.is-marker").last).to_contain_text("fell behind")
    expect(state).to_have_text("live", timeout=10_000)
    db(lambda: services.run_now(Job.objects.get(pk=job.pk)))
    expect(page.locator(".logline[data-id]").filter(has_text="done")).to_have_count(2, timeout=30_000)
    ids = page.eval_on_selector_all(".logline[data-id]", "els => els.map(e => Number(e.dataset.id))")
    assert len(ids) == len(set(ids)) == 2 * per_run
    assert ids == sorted(ids)
    markers = page.eval_on_selector_all(".logline.is-marker", "els => els.map(e => e.textContent)")
    assert not any("retrying" in m or "disconnected" in m for m in markers), markers  # no backoff, no outage


def test_staff_watch_alices_page_read_only(staff, server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 1}, description="hers"))
    page = log_in(browser, server, "staff", "staff-pass")
    expect = playwright_sync.expect
    page.select_option("#view-as", label="alice")
    page.locator(".view-as button").click()
    expect(page.locator(f"#plugin-{sample_plugin.pk}")).to_contain_text("hers")
    page.click(f"#plugin-{sample_plugin.pk} h2 a")
    expect(page.locator(".pill-warn")).to_contain_text("alice's jobs (read-only)")
    card = page.locator(f"#job-{job.pk}")
    expect(card.locator('input[name="rjf§name"]')).to_be_disabled()
    expect(card.get_by_role("button")).to_have_count(0)
    expect(page.locator(".logview-state")).to_have_text("live")
    # alice runs her job; staff see it arrive on her stream
    db(lambda: services.run_now(Job.objects.get(pk=job.pk)))
    expect(page.locator(".logline[data-id]").filter(has_text="Hello, Ann! (1/1)")).to_have_count(1, timeout=30_000)


def test_the_run_page_draws_stored_lines_like_live_ones_pages_earlier_lines_and_downloads(
    server, browser, alice, sample_plugin, tmp_path
):
    from django.utils import timezone

    from scheduler_app.models import LogLine

    coloured = "\x1b[31mred\x1b[0m <script>alert(1)</script> \x1b[1;92mbold\x1b[0m"

    def make_run() -> JobRun:
        job = services.create_job(alice, sample_plugin, {}, description="long")
        run = JobRun.objects.create(job=job, slot=timezone.now(), status=JobRun.Status.SUCCEEDED, log_count=1234)
        now = timezone.now()
        LogLine.objects.bulk_create(
            LogLine(run=run, seq=i, created_at=now, level=20, message=f"line {i}") for i in range(1, 1234)
        )
        LogLine.objects.create(run=run, seq=1234, created_at=now, level=40, message=coloured)
        return run

    run = db(make_run)
    page = log_in(browser, server, "alice", "alice-pass")
    expect = playwright_sync.expect
    drawn = (
        '<span class="ansi-31">red</span> &lt;script&gt;alert(1)&lt;/script&gt; '
        '<span class="ansi-92 ansi-bold">bold</span>'
    )

    # Stored lines: the tail only, drawn by logview.js from the page's data.
    page.goto(f"{server.url}/runs/{run.pk}/")
    lines = page.locator(".logline[data-id]")
    expect(lines).to_have_count(500)
    assert lines.first.get_attribute("data-seq") == "735"
    stored = lines.last
    assert stored.locator(".msg").inner_html() == drawn
    stored_html = stored.evaluate("e => e.outerHTML")

    # The same line arriving over the websocket (the plugin page's replay) is drawn identically.
    page.goto(f"{server.url}/plugins/{sample_plugin.pk}/")
    expect(page.locator(".logview-state")).to_have_text("live")
    live = page.locator(f'.logline[data-id="{stored.get_attribute("data-id")}"]')
    expect(live).to_have_count(1)
    assert live.locator(".msg").inner_html() == drawn
    # (the plugin page tags each line with its run; apart from that the markup is the same)
    assert live.evaluate("e => { e.querySelector('.run-tag').remove(); return e.outerHTML; }") == stored_html

    # Earlier lines, a page at a time by sequence number, until the first.
    page.goto(f"{server.url}/runs/{run.pk}/")
    earlier = page.get_by_role("button", name="Earlier lines")
    earlier.click()
    expect(lines).to_have_count(1000)
    assert lines.first.get_attribute("data-seq") == "235"
    earlier.click()
    expect(lines).to_have_count(1234)
    expect(earlier).to_be_hidden()
    seqs = page.eval_on_selector_all(".logline[data-id]", "els => els.map(e => Number(e.dataset.seq))")
    assert seqs == list(range(1, 1235))

    # The whole log as a text file.
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the whole log").click()
    target = tmp_path / "run.log"
    info.value.save_as(target)
    rows = target.read_text().splitlines()
    assert len(rows) == 1234 and rows[0].endswith("line 1") and rows[-1].endswith(coloured)
    assert [e for e in page.console_errors if not e.startswith("Failed to load resource")] == []


def test_a_running_runs_page_shows_its_stored_lines_then_the_live_ones_once(server, browser, alice, sample_plugin):
    job = db(lambda: services.create_job(alice, sample_plugin, {"name": "Ann", "times": 4}, description="slow"))
    run = db(lambda: services.run_now(Job.objects.get(pk=job.pk)))
    page = log_in(browser, server, "alice", "alice-pass")
    expect = playwright_sync.expect
    # Open the page once the run has written a line or two: those come as stored data.
    lines = page.locator(".logline[data-id]")
    stored_data = page.locator('.logview script[type="application/json"]')
    for _ in range(100):
        page.goto(f"{server.url}/runs/{run.pk}/")
        if stored_data.count():
            break
        page.wait_for_timeout(200)
    assert stored_data.count() == 1, "the run wrote no line in 20 s"
    assert json.loads(stored_data.text_content())[0]["seq"] == 1
    expect(lines.filter(has_text="done")).to_have_count(1, timeout=30_000)
    messages = page.eval_on_selector_all(".logline[data-id] .msg", "els => els.map(e => e.textContent)")
    assert [m for m in messages if m.startswith("Hello")] == [f"Hello, Ann! ({i}/4)" for i in range(1, 5)]
    seqs = page.eval_on_selector_all(".logline[data-id]", "els => els.map(e => Number(e.dataset.seq))")
    assert seqs == list(range(1, len(seqs) + 1))  # stored, then live: no gap, no repeat
    expect(page.locator("[data-run-status]")).to_have_text("succeeded", timeout=30_000)
    assert [e for e in page.console_errors if not e.startswith("Failed to load resource")] == []
