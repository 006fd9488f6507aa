"""Loop health: notice when the event loop is blocked, and name the plugin that blocks it.

A coroutine beats every 0.1 s; a thread watches the beat. When the loop stops beating for
``BLOCKED_LOOP_SECONDS``, the thread looks at the loop thread's stack: the loop's current task
names the run (runs are tasks called "run <id> of <package>"), the plugin's innermost frame
says where. It logs that, and writes it into the run's own log (the handler is thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from scheduler_app.engine.supervisor import SupervisedRun

log = logging.getLogger("scheduler_app.engine")

#: A loop blocked this long is reported, naming the plugin on the stack.
BLOCKED_LOOP_SECONDS = 0.5


class Watchdog:
    def __init__(self, find_run: Callable[[int], SupervisedRun | None]) -> None:
        self.find_run = find_run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id = 0
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._report: str | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        threading.Thread(target=self._watch, name="jobscheduler-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    async def lag_loop(self) -> None:
        """Beat for the watchdog thread, and report when the loop was blocked."""
        period = 0.1
        while True:
            t0 = time.monotonic()
            self._beat = t0
            await asyncio.sleep(period)
            lag = time.monotonic() - t0 - period
            self._beat = time.monotonic()
            if lag >= BLOCKED_LOOP_SECONDS:
                culprit, self._report = self._report, None
                log.warning("the event loop was blocked for %.2f s (%s)", lag, culprit or "no plugin on the stack")

    def _watch(self) -> None:
        reported_for = 0.0
        while not self._stop.wait(0.1):
            beat = self._beat
            if time.monotonic() - beat < BLOCKED_LOOP_SECONDS or beat == reported_for:
                continue
            reported_for = beat
            found = self._find_blocker()
            self._report = found[0] if found else None
            if found is None:
                log.warning("event loop blocked for over %.1f s (not by plugin code)", BLOCKED_LOOP_SECONDS)
                continue
            where, run = found
            log.warning("event loop blocked for over %.1f s by %s", BLOCKED_LOOP_SECONDS, where)
            run.context.logger.warning(
                "this run is blocking the scheduler's event loop (over %.1f s so far, at %s): use await or "
                "asyncio.to_thread for blocking work",
                BLOCKED_LOOP_SECONDS,
                where.rpartition(" at ")[2],
            )

    def _find_blocker(self) -> tuple[str, SupervisedRun] | None:
        frame = sys._current_frames().get(self._loop_thread_id)
        if frame is None or self._loop is None:
            return None
        run: SupervisedRun | None = None
        try:
            task = asyncio.current_task(self._loop)  # a dict read: safe from this thread
        except RuntimeError:
            task = None
        if task is not None and task.get_name().startswith("run "):
            with contextlib.suppress(ValueError, IndexError):
                run = self.find_run(int(task.get_name().split()[1]))
        if run is None:
            return None
        folder = run.package.rpartition(".")[0].rpartition(".")[0] or run.package
        f: Any = frame
        where = "an unknown place"
        while f is not None:
            module = f.f_globals.get("__name__", "")
            if module == folder or module.startswith(folder + "."):
                where = f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
                break
            f = f.f_back
        return f"plugin {run.package} (run {run.run.id}, job {run.run.job_id}) at {where}", run
