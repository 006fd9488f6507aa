"""Regenerate the screenshots in docs/screenshots/ from a fresh demo database.

Starts ``manage.py serve`` (scheduler embedded) on a temporary SQLite file loaded with the
demo fixture, lets the scheduler produce some history, and photographs the pages as alice
sees them with Debian's chromium:

    .venv/bin/python bench/web_screenshots.py          # writes docs/screenshots/*.png
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
sys.path.insert(0, str(ROOT))

SHOTS = [
    "login.png",
    "plugin-page.png",
    "live-log.png",
    "validation-error.png",
    "dashboard.png",
    "run-history.png",
    "run-page.png",
    "phone-dashboard.png",
    "phone-plugin-page.png",
    "admin-runs.png",
    "admin-plugins.png",
    "admin-run.png",
]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="screens-"))
    env = {
        **os.environ,
        # The real settings (the demo's passwords use the default hasher), as ./dev.sh run has them.
        "DJANGO_SETTINGS_MODULE": "jobscheduler.settings",
        "DEBUG": "true",
        "DB_CONNECTION": f"sqlite:///{workdir / 'demo.sqlite3'}",
        "SCHEDULER_EMBEDDED": "true",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "loaddata", "demo", "-v0"], cwd=ROOT, env=env, check=True)
    from tests.processes import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*manage, "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=(workdir / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(3)
        shoot(base)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"wrote {', '.join(SHOTS)} to {OUT}")


def shoot(base: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 860}, device_scale_factor=1)
        page.set_default_timeout(30_000)
        page.goto(f"{base}/accounts/login/")
        page.screenshot(path=OUT / "login.png")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "alice")
        page.click("form.stack button[type=submit]")
        page.wait_for_url(f"{base}/")

        # Some history first: the active jobs run on their schedules; queue a few by hand too.
        for plugin_id in (1, 3, 4, 5):
            page.goto(f"{base}/plugins/{plugin_id}/")
            page.locator(".job-card").first.get_by_role("button", name="Run now").click()
        time.sleep(8)

        # The plugin page with a run streaming live (prod: ANSI colours and a warning).
        page.goto(f"{base}/plugins/5/")
        expect(page.locator(".logview-state")).to_have_text("live")
        page.locator(".job-card").first.get_by_role("button", name="Run now").click()
        expect(page.locator(".logline", has_text="deployed")).to_have_count(2, timeout=30_000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=OUT / "plugin-page.png")
        page.locator(".logview").screenshot(path=OUT / "live-log.png")

        # An invalid value, with Pydantic's error under the field.
        card = page.locator(".job-card").first
        card.locator('input[name="rjf§version"]').fill("1.x")
        card.locator('button[name="save"]').click()
        expect(page.locator(".rjf-error-text").first).to_be_visible()
        page.locator(".job-card").first.screenshot(path=OUT / "validation-error.png")

        page.goto(f"{base}/")
        page.screenshot(path=OUT / "dashboard.png", full_page=True)

        page.goto(f"{base}/jobs/4/runs/")
        page.screenshot(path=OUT / "run-history.png")

        # A failed run: make the lab experiment always fail, run it, open its page.
        page.goto(f"{base}/plugins/3/")
        card = page.locator("#job-4")
        card.locator('input[name="rjf§failure_rate"]').fill("1")
        card.locator('button[name="save"]').click()
        page.locator("#job-4").get_by_role("button", name="Run now").click()
        badge = page.locator('[data-last-run-for="4"] .badge')
        expect(badge).to_have_text("failed", timeout=30_000)
        badge.click()
        expect(page.locator(".traceback")).to_be_visible()
        page.screenshot(path=OUT / "run-page.png", full_page=True)
        run_url = page.url

        # A phone (390 x 844, as an iPhone 12-15 shows pages): the same pages, nothing sideways.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        small = phone.new_page()
        small.goto(f"{base}/accounts/login/")
        small.fill("#id_username", "alice")
        small.fill("#id_password", "alice")
        small.click("form.stack button[type=submit]")
        small.wait_for_url(f"{base}/")
        small.screenshot(path=OUT / "phone-dashboard.png")
        small.goto(f"{base}/plugins/1/")
        expect(small.locator(".logview-state")).to_have_text("live")
        small.screenshot(path=OUT / "phone-plugin-page.png")
        phone.close()

        # The operators' admin at 1280 px: lists fit, times have seconds.
        admin = browser.new_page(viewport={"width": 1280, "height": 800})
        admin.goto(f"{base}/admin/login/")
        admin.fill("#id_username", "admin")
        admin.fill("#id_password", "admin")
        admin.click("input[type=submit]")
        admin.goto(f"{base}/admin/scheduler_app/jobrun/")
        admin.screenshot(path=OUT / "admin-runs.png")
        admin.goto(f"{base}/admin/scheduler_app/plugin/")
        admin.screenshot(path=OUT / "admin-plugins.png")
        admin.goto(f"{base}/admin/scheduler_app/jobrun/{run_url.rstrip('/').split('/')[-1]}/change/")
        admin.screenshot(path=OUT / "admin-run.png")
        browser.close()


if __name__ == "__main__":
    main()
