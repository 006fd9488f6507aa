"""The Grafana dashboard (docs/grafana-dashboard.json) fed by a running system, as a picture.

Grafana itself cannot be installed on this machine (no Debian package, no PyPI or npm
package ships it), so this renders an honest equivalent: the dashboard's own panels and
PromQL queries, answered by a real Prometheus (Debian's ``prometheus`` package) that scraped a
real system -- one web process (``manage.py serve``) and two ``runscheduler`` nodes with
``--health-port``, on SQLite and a private Redis -- drawn as SVG line charts and captured
with headless chromium. The queries, the metric names and the numbers are real; the styling
is ours, not Grafana's.

Usage:

    .venv/bin/python bench/metrics_dashboard.py --minutes 6            # docs/screenshots/metrics-dashboard.png
    .venv/bin/python bench/metrics_dashboard.py --render-only --prometheus http://127.0.0.1:8690

Needs ``prometheus`` and ``redis-server`` on PATH and /usr/bin/chromium. Ports: web 8610,
nodes 8611-8612, Prometheus 8690, Redis 6406, a webhook receiver on 8620.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = Path("/tmp/jobscheduler-metrics-demo")
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
SCREENSHOT = ROOT / "docs" / "screenshots" / "metrics-dashboard.png"
WEB_PORT, NODE_PORTS, PROM_PORT, REDIS_PORT, HOOK_PORT = 8610, (8611, 8612), 8690, 6406, 8620
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]  # fmt: skip
COLOURS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ffb357"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        DJANGO_SETTINGS_MODULE="jobscheduler.settings",
        DEBUG="true",
        DB_CONNECTION=f"sqlite:///{WORK / 'jobs.db'}",
        REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0",
        CHANNEL_LAYER_PREFIX="metricsdemo",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
        SCHEDULER_HEARTBEAT_SECONDS="2",
        SCHEDULER_LOST_AFTER_SECONDS="10",
        ALERTS_POLL_SECONDS="0.5",
        ALERTS_RETRY_SECONDS="2",
    )
    e.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return e


def prepare() -> None:
    """A fresh database: three plugins, 36 jobs (some fail now and then), alerts on a few."""
    os.environ.update(env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from scheduler_app import services
    from scheduler_app.models import AlertRule

    call_command("migrate", verbosity=0)
    lab = services.register_plugin("plugins.lab_plugin@v0_1_0.plugin.Plugin", interval=5)
    sample = services.register_plugin("plugins.sample_plugin@v0_1_0.plugin.Plugin", interval=3)
    prod = services.register_plugin("plugins.prod_plugin@v0_1_0.plugin.Plugin", interval=10)
    users = [get_user_model().objects.create_user(f"user{i}", password="demo-pass-123") for i in range(12)]
    get_user_model().objects.create_superuser("ops", "ops@example.com", "demo-pass-123")
    for i, user in enumerate(users):
        job = services.create_job(user, lab, {"samples": 2 + i % 4, "failure_rate": [0.05, 0.3, 0.8][i % 3]},
                                  activate=True)  # fmt: skip
        if i % 4 == 0:
            AlertRule.objects.create(job=job, webhook_url=f"http://127.0.0.1:{HOOK_PORT}/hook")
        services.create_job(user, sample, {"name": f"user {i}", "times": 1 + i % 3}, activate=True)
        services.create_job(user, prod, {"version": "1.2.3"}, activate=True)


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def start(args: list[str], log: str) -> subprocess.Popen[bytes]:
    out = open(WORK / log, "wb")
    return subprocess.Popen(args, cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:g} s (logs in {WORK})")


async def _watch_logs(count: int) -> None:
    """Open ``count`` live-log websockets as a logged-in user (the websocket gauge moves)."""
    import asyncio

    import websockets
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from scheduler_app.models import Plugin

    user = await get_user_model().objects.aget(username="user0")
    store = SessionStore()
    store[SESSION_KEY], store[BACKEND_SESSION_KEY] = str(user.pk), settings.AUTHENTICATION_BACKENDS[0]
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    await store.asave()
    plugin = await Plugin.objects.afirst()
    assert plugin is not None
    url = f"ws://127.0.0.1:{WEB_PORT}/ws/logs/{plugin.pk}/{user.pk}/"
    headers = {"Cookie": f"sessionid={store.session_key}", "Origin": f"http://127.0.0.1:{WEB_PORT}"}
    sockets = [await websockets.connect(url, additional_headers=headers) for _ in range(count)]

    async def drain(ws: Any) -> None:
        async for _ in ws:
            pass

    tasks = [asyncio.create_task(drain(ws)) for ws in sockets]
    await asyncio.sleep(10**6)
    for task in tasks:
        task.cancel()


def run_system(minutes: float) -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    subprocess.run(["redis-server", "--port", str(REDIS_PORT), "--save", "", "--daemonize", "yes",
                    "--logfile", str(WORK / "redis.log")], check=True)  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    hook = ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        prepare()
        manage = [sys.executable, "manage.py"]
        procs.append(start([*manage, "serve", "--port", str(WEB_PORT), "--no-scheduler"], "web.log"))
        for i, port in enumerate(NODE_PORTS):
            procs.append(start([*manage, "runscheduler", "--node-name", f"node{i + 1}", "--health-port", str(port)],
                               f"node{i + 1}.log"))  # fmt: skip
        wait_http(f"http://127.0.0.1:{WEB_PORT}/healthz")
        for port in NODE_PORTS:
            wait_http(f"http://127.0.0.1:{port}/healthz")
        config = WORK / "prometheus.yml"
        targets = [f"127.0.0.1:{WEB_PORT}"] + [f"127.0.0.1:{p}" for p in NODE_PORTS]
        config.write_text(
            "global: {scrape_interval: 2s, evaluation_interval: 2s}\n"
            f"scrape_configs:\n  - job_name: jobscheduler\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
        )
        procs.append(start(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={WORK / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{PROM_PORT}"], "prometheus.log"))  # fmt: skip
        wait_http(f"http://127.0.0.1:{PROM_PORT}/-/ready")
        import asyncio

        watcher = threading.Thread(target=lambda: asyncio.run(_watch_logs(3)), daemon=True)
        watcher.start()
        print(f"running the system for {minutes:g} min (logs in {WORK}) ...", flush=True)
        time.sleep(minutes * 60)
        photograph_pages()
        render(f"http://127.0.0.1:{PROM_PORT}", minutes)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        hook.shutdown()
        subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "shutdown", "nosave"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def photograph_pages() -> None:
    """The users' and operators' side of the same system: run statistics, a job's history and
    alerts, the audit trail and the alert deliveries in the admin."""
    from playwright.sync_api import sync_playwright

    from scheduler_app.models import Job

    lab_job = Job.objects.filter(user__username="user1", plugin__package__contains="lab_plugin").get()
    base = f"http://127.0.0.1:{WEB_PORT}"
    out = SCREENSHOT.parent
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(f"{base}/accounts/login/")
        page.fill("input[name=username]", "user1")
        page.fill("input[name=password]", "demo-pass-123")
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_url(f"{base}/")
        page.screenshot(path=str(out / "ops-dashboard-stats.png"))
        page.goto(f"{base}/jobs/{lab_job.pk}/history/")
        page.fill("input[name=email]", "user1@example.com")
        page.fill("input[name=webhook_url]", f"http://127.0.0.1:{HOOK_PORT}/hook")
        page.fill("input[name=after_failures]", "2")
        page.click("text=Save alerts")
        page.wait_for_load_state()
        page.screenshot(path=str(out / "ops-job-history.png"), full_page=True)
        page.context.clear_cookies()
        page.goto(f"{base}/admin/login/")
        page.fill("input[name=username]", "ops")
        page.fill("input[name=password]", "demo-pass-123")
        page.click("input[type=submit]")
        page.goto(f"{base}/admin/scheduler_app/auditentry/")
        page.screenshot(path=str(out / "ops-admin-audit.png"))
        page.goto(f"{base}/admin/scheduler_app/alertdelivery/")
        page.screenshot(path=str(out / "ops-admin-deliveries.png"))
        browser.close()


# --- rendering ------------------------------------------------------------------------------


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    out = fmt
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def fmt_value(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.1f} s"
    if unit == "ops":
        return f"{value:.2f}/s" if value < 10 else f"{value:.0f}/s"
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}"


def panel_svg(series: list[tuple[str, list[tuple[float, float]]]], unit: str, start: float, end: float) -> str:
    width, height, left, bottom = 440, 170, 56, 20
    values = [v for _, points in series for _, v in points]
    if not values:
        return f'<svg width="{width}" height="{height}"><text x="{width / 2}" y="{height / 2}" fill="#8e8e8e" ' \
               'text-anchor="middle" font-size="13">No data</text></svg>'  # fmt: skip
    top_value = max(values) * 1.1 or 1.0
    low = min(0.0, min(values))

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * (width - left - 8)

    def y(v: float) -> float:
        return 6 + (1 - (v - low) / (top_value - low)) * (height - bottom - 6)

    parts = []
    for i in range(5):
        v = low + (top_value - low) * i / 4
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#2c3235"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" fill="#8e8e8e" font-size="10" text-anchor="end">'
                     f"{html.escape(fmt_value(v, unit))}</text>")  # fmt: skip
    for i in range(4):
        t = start + (end - start) * i / 3
        label = time.strftime("%H:%M", time.gmtime(t))
        anchor = "end" if i == 3 else "middle"
        parts.append(f'<text x="{x(t):.1f}" y="{height - 4}" fill="#8e8e8e" font-size="10" text-anchor="{anchor}">'
                     f"{label}</text>")  # fmt: skip
    for index, (_, points) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{path}"/>')
    return f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'


def render(prometheus: str, minutes: float, out_png: Path = SCREENSHOT) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    end = time.time()
    start = end - minutes * 60
    step = max(2.0, (end - start) / 200)
    cards = []
    for panel in dashboard["panels"]:
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        series: list[tuple[str, list[tuple[float, float]]]] = []
        for target in panel["targets"]:
            for result in query_range(prometheus, target["expr"], start, end, step):
                points = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
                series.append((legend(target.get("legendFormat") or "", result["metric"]), points))
        keys = "".join(
            f'<span class="key"><i style="background:{COLOURS[i % len(COLOURS)]}"></i>{html.escape(name)}'
            f" <b>{html.escape(fmt_value(points[-1][1], unit)) if points else ''}</b></span>"
            for i, (name, points) in enumerate(series)
        )
        cards.append(f'<div class="panel"><h3>{html.escape(panel["title"])}</h3>'
                     f"{panel_svg(series, unit, start, end)}<div class=\"keys\">{keys}</div></div>")  # fmt: skip
    page = f"""<!doctype html><meta charset="utf-8"><title>jobscheduler dashboard</title>
<style>
body {{ background:#111217; color:#ccccdc; font: 13px/1.4 Inter, "DejaVu Sans", sans-serif; margin: 0; padding: 14px; }}
header {{ display:flex; justify-content:space-between; align-items:baseline; margin-bottom:10px; }}
h1 {{ font-size:17px; margin:0; color:#fff; }} .note {{ color:#8e8e8e; font-size:11.5px; }}
.grid {{ display:grid; grid-template-columns: repeat(3, 456px); gap:8px; }}
.panel {{ background:#181b1f; border:1px solid #2c3235; border-radius:3px; padding:6px 8px; }}
h3 {{ font-size:13px; margin:0 0 4px; color:#ccccdc; font-weight:500; }}
.keys {{ font-size:11px; color:#ccccdc; min-height:16px; }} .key {{ margin-right:10px; white-space:nowrap; }}
.key i {{ display:inline-block; width:10px; height:3px; margin-right:4px; vertical-align:middle; }}
</style>
<header><h1>{html.escape(dashboard["title"])} <span class="note">last {minutes:g} minutes, UTC</span></h1>
<span class="note">docs/grafana-dashboard.json's panels and PromQL, answered by Prometheus {html.escape(prometheus)}
(scraping 1 web process + 2 runscheduler nodes); drawn by bench/metrics_dashboard.py, not by Grafana</span></header>
<div class="grid">{"".join(cards)}</div>"""
    html_path = WORK / "dashboard.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        page_ = browser.new_page(viewport={"width": 1420, "height": 900})
        page_.goto(html_path.as_uri())
        out_png.parent.mkdir(parents=True, exist_ok=True)
        page_.screenshot(path=str(out_png), full_page=True)
        browser.close()
    print(f"wrote {out_png} (page: {html_path})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=6, help="how long the system runs before the picture")
    parser.add_argument("--render-only", action="store_true", help="only draw, from an existing Prometheus")
    parser.add_argument("--prometheus", default=f"http://127.0.0.1:{PROM_PORT}")
    args = parser.parse_args()
    if args.render_only:
        render(args.prometheus, args.minutes)
    else:
        run_system(args.minutes)


if __name__ == "__main__":
    main()
