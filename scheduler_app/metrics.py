"""Prometheus metrics: what the scheduler and the web processes count, and how they expose it.

The rest of the code calls the small named functions below (``run_finished``,
``claims``, ``log_lines_written`` ...) and never touches ``prometheus_client`` itself, so the
metric names and labels live in one place and a call site reads as what happened.

How several processes are counted (docs/architecture.md, "Metrics"): every process keeps its
own counters and exposes them on its own endpoint -- a scheduler node on ``runscheduler
--health-port``, a web process on ``/metrics`` -- and Prometheus scrapes each as a target
and sums in queries (``sum by (status) (rate(jobscheduler_runs_total[5m]))``). Web workers
that share one port (several processes behind one socket) set ``PROMETHEUS_MULTIPROC_DIR``:
``prometheus_client`` then keeps values in files in that folder and ``/metrics`` adds up
every process's files.

Cost: what happens once per run (runs by plugin and status, duration, start lag) is kept in
plain dictionaries and lists and turned into metric families when scraped (``_RunMetrics``);
what happens per claim round or per writer batch uses ``prometheus_client``'s own types.
"""

from __future__ import annotations

import ipaddress
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString


def _enabled() -> bool:
    """METRICS_ENABLED=false turns every call site into a no-op (to measure what metrics cost)."""
    raw = os.environ.get("METRICS_ENABLED", "true").strip().lower()
    if raw not in {"true", "false", "1", "0", "yes", "no", "on", "off", ""}:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"METRICS_ENABLED={raw!r}: expected true or false")
    return raw in {"true", "1", "yes", "on"}


ENABLED = _enabled()

_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _Histogram:
    """Bucket counts kept in plain lists: ``bisect`` (C) and two additions per observation.

    Only the thread that observes writes (the event loop); a scrape reads from another thread
    under the GIL, so it may see a count and a sum one observation apart, never a torn value.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((floatToGoString(bound), total))
        return out


class _RunMetrics:
    """Runs by plugin and status, their durations and start lags: recorded once per run, so
    kept in plain dictionaries and lists (~0.5 µs a run instead of ~6 µs for three
    lock-guarded ``prometheus_client`` values) and turned into metric families at scrape time.
    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, web workers) custom collectors are not
    aggregated: run the scheduler as ``runscheduler``, which exposes its own endpoint."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], int] = {}
        self.durations: dict[str, _Histogram] = {}
        self.lag = _Histogram(_LAG_BUCKETS)

    def collect(self) -> Iterator[Any]:
        runs = CounterMetricFamily("jobscheduler_runs", "Finished runs, by plugin and final status.",
                                   labels=["plugin", "status"])  # fmt: skip
        for (package, status), count in list(self.runs.items()):
            runs.add_metric([plugin_label(package), status], count)
        yield runs
        durations = HistogramMetricFamily(
            "jobscheduler_run_duration_seconds", "Run duration (start to finish).", labels=["plugin"]
        )
        for package, hist in list(self.durations.items()):
            durations.add_metric([plugin_label(package)], hist.cumulative(), hist.sum)
        yield durations
        lag = HistogramMetricFamily("jobscheduler_run_start_lag_seconds", "Slot-to-start lag of scheduled runs.")
        lag.add_metric([], self.lag.cumulative(), self.lag.sum)
        yield lag


_RUN_METRICS = _RunMetrics()
REGISTRY.register(_RUN_METRICS)
CLAIMS = Counter("jobscheduler_claims", "Slot claims, won (this node runs it) or lost (another node did).", ["result"])
SLOTS = Counter(
    "jobscheduler_slots_not_run", "Due slots not run: skipped (the job still ran) or coalesced (missed).", ["reason"]
)
RETRIES = Counter("jobscheduler_run_retries", "Runs retried after a failure.", ["plugin"])
WRITER_QUEUE = Gauge(
    "jobscheduler_writer_queue_depth", "Run records and log lines waiting for the writer.", multiprocess_mode="livesum"
)
WRITER_BATCH = Histogram(
    "jobscheduler_writer_batch_seconds", "Time to write and commit one writer batch.", buckets=_BATCH_BUCKETS
)
LOG_LINES = Counter("jobscheduler_log_lines", "Log lines of runs, written to the database or published.", ["stage"])
WEBSOCKETS = Gauge(
    "jobscheduler_websocket_connections", "Open live-log websocket connections.", multiprocess_mode="livesum"
)
PLUGIN_LOAD_ERRORS = Counter("jobscheduler_plugin_load_errors", "Plugin code that failed to load.", ["plugin"])
HEARTBEATS = Counter("jobscheduler_node_heartbeats", "Heartbeats this scheduler node wrote.")
LAST_HEARTBEAT = Gauge(
    "jobscheduler_node_last_heartbeat_timestamp_seconds",
    "When this scheduler node last wrote its heartbeat (Unix time).",
    multiprocess_mode="max",
)
ALERTS = Counter("jobscheduler_alerts", "Alert delivery attempts, by channel and result.", ["channel", "result"])


def plugin_label(package: str) -> str:
    """``plugins.sample_plugin@v0_1_0.plugin.Plugin`` -> ``sample_plugin@v0_1_0`` (bounded, readable)."""
    return _plugin_label(package)


@lru_cache(maxsize=4096)
def _plugin_label(package: str) -> str:
    parts = package.split(".")
    if len(parts) >= 3 and parts[0] == "plugins":
        return parts[1]
    return parts[-3] if len(parts) >= 3 else package


# --- the engine's call sites --------------------------------------------------------------


def run_started(lag_seconds: float | None) -> None:
    """A scheduled run started ``lag_seconds`` after its slot (None for manual runs)."""
    if ENABLED and lag_seconds is not None:
        _RUN_METRICS.lag.observe(lag_seconds if lag_seconds > 0 else 0.0)


def run_finished(package: str, status: str, duration_seconds: float | None) -> None:
    if not ENABLED:
        return
    runs = _RUN_METRICS.runs
    key = (package, status)
    runs[key] = runs.get(key, 0) + 1
    if duration_seconds is not None:
        hist = _RUN_METRICS.durations.get(package)
        if hist is None:
            hist = _RUN_METRICS.durations[package] = _Histogram(_DURATION_BUCKETS)
        hist.observe(duration_seconds if duration_seconds > 0 else 0.0)


_CLAIMS_WON = CLAIMS.labels("won")
_CLAIMS_LOST = CLAIMS.labels("lost")
_SKIPPED = SLOTS.labels("skipped")
_COALESCED = SLOTS.labels("coalesced")


def claims(won: int, lost: int) -> None:
    if not ENABLED:
        return
    if won:
        _CLAIMS_WON.inc(won)
    if lost:
        _CLAIMS_LOST.inc(lost)


_seen_slots: dict[str, int] = {"coalesced": 0, "skipped": 0}


def slots_counted(coalesced_total: int, skipped_total: int) -> None:
    """The engine's running totals of slots not run (``Counters``); the increase since the last call is counted."""
    if not ENABLED:
        return
    coalesced, skipped = coalesced_total - _seen_slots["coalesced"], skipped_total - _seen_slots["skipped"]
    if coalesced > 0:
        _COALESCED.inc(coalesced)
    if skipped > 0:
        _SKIPPED.inc(skipped)
    # a fresh engine in this process (tests) starts its totals at 0 again
    _seen_slots["coalesced"], _seen_slots["skipped"] = coalesced_total, skipped_total


def slots_skipped(count: int = 1) -> None:
    """Due slots not run because the job was still running (a job never overlaps itself)."""
    if not ENABLED:
        return
    _SKIPPED.inc(count)


def slots_coalesced(count: int = 1) -> None:
    """Missed slots (loop stalled, node down) folded into one run."""
    if not ENABLED:
        return
    _COALESCED.inc(count)


def run_retried(package: str) -> None:
    RETRIES.labels(plugin_label(package)).inc()


def writer_queue_depth(depth: int) -> None:
    if not ENABLED:
        return
    WRITER_QUEUE.set(depth)


def writer_batch(seconds: float) -> None:
    if not ENABLED:
        return
    WRITER_BATCH.observe(seconds)


_LINES_WRITTEN = LOG_LINES.labels("written")
_LINES_PUBLISHED = LOG_LINES.labels("published")


def log_lines_written(count: int) -> None:
    if not ENABLED:
        return
    if count:
        _LINES_WRITTEN.inc(count)


def log_lines_published(count: int) -> None:
    if not ENABLED:
        return
    if count:
        _LINES_PUBLISHED.inc(count)


def plugin_load_error(package: str) -> None:
    PLUGIN_LOAD_ERRORS.labels(plugin_label(package)).inc()


def node_heartbeat(unix_time: float) -> None:
    HEARTBEATS.inc()
    LAST_HEARTBEAT.set(unix_time)


# --- the web's call sites -----------------------------------------------------------------


def websocket_opened() -> None:
    WEBSOCKETS.inc()


def websocket_closed() -> None:
    WEBSOCKETS.dec()


def alert_sent(channel: str, result: str) -> None:
    ALERTS.labels(channel, result).inc()


# --- exposition and access ----------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The metrics of this process (or, in multiprocess mode, of every process sharing the folder)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def access_checker(token: str, allowed: list[str]) -> Callable[[str | None, str | None], bool]:
    """``check(remote_address, authorization_header)``: the METRICS_TOKEN or an allowed address."""
    networks = [ipaddress.ip_network(item, strict=False) for item in allowed]

    def check(remote: str | None, authorization: str | None) -> bool:
        if token and authorization == f"Bearer {token}":
            return True
        if not remote:
            return False
        try:
            address = ipaddress.ip_address(remote.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in networks)

    return check


def allowed(remote: str | None, authorization: str | None) -> bool:
    from django.conf import settings

    return access_checker(settings.METRICS_TOKEN, settings.METRICS_ALLOWED_ADDRESSES)(remote, authorization)
