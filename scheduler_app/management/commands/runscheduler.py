"""``manage.py runscheduler``: one scheduler node in its own process.

Run one or more on any machines sharing the database (and Redis, for live logs and instant
change notifications). SIGTERM or SIGINT stops gracefully (stop claiming, let running runs
finish within ``SCHEDULER_GRACE_SECONDS``, cancel and record the rest, flush, exit 0); a
second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger("scheduler_app.engine")


class Command(BaseCommand):
    help = "Run a scheduler node: every active job on its slots, exactly once across nodes."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--node-name", default="", help="Name prefix of this node (default: the host name).")
        parser.add_argument(
            "--health-port",
            type=int,
            default=None,
            help="Serve /healthz, /readyz and /metrics on this port (docs/deployment.md, probes).",
        )
        parser.add_argument(
            "--health-host", default="127.0.0.1", help="Interface of the health port (default 127.0.0.1)."
        )

    def handle(self, *args: Any, node_name: str, health_port: int | None, health_host: str, **options: Any) -> None:
        from scheduler_app import wakeup

        # A loop that checks the node's lease whenever it wakes up (a SIGSTOPped node cancels its
        # runs before any of them takes another step): see scheduler_app/wakeup.py.
        runner = asyncio.Runner(loop_factory=wakeup.new_event_loop)
        try:
            runner.run(self._main(node_name, health_port, health_host))
        except BaseException:
            runner.close()
            raise
        leftovers = [task for task in asyncio.all_tasks(runner.get_loop()) if not task.done()]
        if not leftovers:
            runner.close()
            return
        # The engine stopped and wrote every record; what is left are runs it abandoned (their
        # plugins swallow asyncio.CancelledError). Closing the runner would cancel them once
        # more and wait for them to end on their own -- for as long as the plugin likes, so
        # SIGTERM would end in the supervisor's SIGKILL. Exit without them.
        log.warning("exiting with %d abandoned run(s) still going (their records are written)", len(leftovers))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    async def _main(self, node_name: str, health_port: int | None = None, health_host: str = "127.0.0.1") -> None:
        from scheduler_app import alerts, nodes
        from scheduler_app.engine import Engine
        from scheduler_app.health import NodeProbeServer

        engine = Engine(node_name=nodes.make_node_name(node_name) if node_name else None)
        loop = asyncio.get_running_loop()
        signals_seen = 0
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            name = signal.Signals(signum).name
            if signals_seen > 1:
                log.warning("second %s: exiting at once", name)
                sys.stderr.flush()
                os._exit(1)
            log.info("%s: stopping gracefully (a second signal exits at once)", name)
            stop.set()
            engine.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        probes = None
        if health_port is not None:
            try:
                probes = NodeProbeServer(loop, engine.node, health_host, health_port)
            except OSError as exc:
                raise CommandError(f"--health-port {health_port} on {health_host}: {exc.strerror or exc}") from exc
        await engine.start()
        if probes is not None:
            probes.start()
        # Failure alerts read finished runs from the database in their own thread: a slow mail
        # server or a dead webhook never reaches this loop.
        alert_worker = alerts.start_worker()
        try:
            if not stop.is_set():
                await engine.wait_stop_requested()
        finally:
            if alert_worker is not None:
                alert_worker.stop()
            await engine.stop()
            if probes is not None:
                probes.stop()
