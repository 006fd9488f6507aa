"""Prometheus metrics: the counters move when runs happen (scraped from a real runscheduler
and a real web process), the dashboard and the docs name only metrics that exist, and only
the token or allowed addresses may read them."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from scheduler_app import metrics
from tests.engine_support import FAST, probe_job, probe_plugin, schedulers, user
from tests.processes import free_port, manage, wait_for_port, wait_until

__all__ = ["schedulers"]

ROOT = Path(__file__).resolve().parent.parent


def ours() -> set[str]:
    """Every sample name our metrics expose (``_total``, ``_bucket`` ... included)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("jobscheduler_"):
            names |= {family.name + suffix for suffix in suffixes[family.type]} | {family.name}
    return names


def families() -> set[str]:
    return {f.name for f in REGISTRY.collect() if f.name.startswith("jobscheduler_")}


def test_the_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"jobscheduler_[a-z_]+", target["expr"]))
    assert used and used <= ours(), used - ours()
    # and every metric has a panel
    assert {f for f in families() if not any(u.startswith(f) for u in used)} == set()


def test_every_metric_is_documented():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for family in families():
        shown = f"{family}_total" if f"{family}_total" in ours() else family
        assert f"`{shown}`" in doc, f"docs/operations.md does not describe {shown}"


def test_access_is_for_the_token_or_an_allowed_network():
    check = metrics.access_checker("s3cret", ["127.0.0.1/32", "10.0.0.0/8", "::1/128"])
    assert check("127.0.0.1", None) and check("10.2.3.4", None) and check("::1", None)
    assert not check("192.168.1.9", None)
    assert check("192.168.1.9", "Bearer s3cret")
    assert not check("192.168.1.9", "Bearer wrong") and not check(None, None) and not check("junk", None)
    assert not metrics.access_checker("", [])("127.0.0.1", "Bearer ")  # no token set: a bare Bearer is no key


def test_plugin_labels_are_short_and_bounded():
    assert metrics.plugin_label("plugins.sample_plugin@v0_1_0.plugin.Plugin") == "sample_plugin@v0_1_0"
    assert metrics.plugin_label("tests.plugins.engine_probe@v1_0_0.plugin.Plugin") == "engine_probe@v1_0_0"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def total(values: dict, name: str, **labels: str) -> float:
    return sum(
        v for (n, lbl), v in values.items() if n == name and all(dict(lbl).get(k) == x for k, x in labels.items())
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_counters_move_when_runs_happen_on_a_real_scheduler_and_a_real_web_process(schedulers, tmp_path):
    plugin = probe_plugin(interval=1)
    probe_job(user("alice"), plugin, lines=3)
    probe_job(user("bob"), plugin, mode="fail")
    port = free_port()
    node = manage(["runscheduler", "--node-name", "scraped", "--health-port", str(port)], tmp_path / "node.log",
                  **FAST)  # fmt: skip
    schedulers.procs.append(node)
    node.wait_for_output("started in", 30)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for_port(port)
    first = scrape(url)

    def moved() -> bool:
        now = scrape(url)
        succeeded = total(now, "jobscheduler_runs_total", status="succeeded", plugin="engine_probe@v1_0_0")
        failed = total(now, "jobscheduler_runs_total", status="failed")
        before = (
            total(first, "jobscheduler_runs_total", status="succeeded"),
            total(first, "jobscheduler_runs_total", status="failed"),
        )
        return succeeded >= before[0] + 2 and failed >= before[1] + 2

    wait_until(moved, 20, f"runs counted at {url}")
    now = scrape(url)
    assert total(now, "jobscheduler_claims_total", result="won") >= 4
    assert total(now, "jobscheduler_run_duration_seconds_count") >= 4
    assert total(now, "jobscheduler_run_start_lag_seconds_count") >= 4
    assert total(now, "jobscheduler_log_lines_total", stage="written") >= 8
    assert total(now, "jobscheduler_writer_batch_seconds_count") >= 1
    wait_until(lambda: total(scrape(url), "jobscheduler_node_heartbeats_total") >= 2, 10, "heartbeats")
    node.stop()

    # a web process with its scheduler embedded counts its runs on its own /metrics
    web_port = free_port()
    web = manage(["serve", "--port", str(web_port)], tmp_path / "web.log", SCHEDULER_EMBEDDED="true", **FAST)
    schedulers.procs.append(web)
    wait_for_port(web_port, 30)
    web_url = f"http://127.0.0.1:{web_port}/metrics"
    wait_until(lambda: total(scrape(web_url), "jobscheduler_runs_total") >= 3, 20, f"runs counted at {web_url}")
    assert "jobscheduler_websocket_connections" in {n for n, _ in scrape(web_url)}
