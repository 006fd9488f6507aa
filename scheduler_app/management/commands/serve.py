"""``manage.py serve``: daphne serving the ASGI application, with the scheduler engine embedded.

This is what ``./dev.sh run`` executes: one process, one event loop. daphne runs Twisted on
the asyncio reactor, so the engine (plain asyncio) starts on the same loop once the reactor
runs, and a "before shutdown" trigger lets it finish running runs before the loop stops.
With ``SCHEDULER_EMBEDDED=false`` this is a plain web server and the scheduler runs
elsewhere (``manage.py runscheduler``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

log = logging.getLogger("scheduler_app.serve")


class Command(BaseCommand):
    help = "Serve the web application with daphne; runs the scheduler in-process when SCHEDULER_EMBEDDED is true."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000).")
        parser.add_argument(
            "--no-scheduler",
            action="store_true",
            help="Do not start the embedded scheduler even if SCHEDULER_EMBEDDED is true.",
        )

    def handle(self, *args: Any, host: str, port: int, no_scheduler: bool, **options: Any) -> None:
        # daphne.server installs Twisted's asyncio reactor at import: import it before anything
        # else imports twisted.internet.reactor.
        from channels.routing import get_default_application
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from twisted.internet import defer
        from twisted.internet import reactor as twisted_reactor
        from twisted.internet.error import CannotListenError

        reactor: Any = twisted_reactor  # the module-level reactor's stubs don't match the installed one

        # The system checks queried the database from this thread, which never serves a
        # request: give its connection back, or it stays borrowed from the web pool (one of
        # DB_POOL_MAX_SIZE) for the life of the process; with a pool of one, nothing served.
        connections.close_all()

        class _Server(Server):
            """daphne's server, remembering a listen failure (daphne only logs it) so we exit non-zero."""

            listen_failure: Any = None

            def listen_error(self, failure: Any) -> None:
                self.listen_failure = failure
                self.stop()

        application = get_default_application()
        embedded = settings.SCHEDULER["EMBEDDED"] and not no_scheduler
        engine = None
        if embedded:
            from scheduler_app.engine import Engine

            engine = Engine(embedded=True)

        server = _Server(
            application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            # Our own handlers: the first signal stops gracefully, a second one exits at once.
            signal_handlers=False,
            application_close_timeout=5,
            ready_callable=lambda: log.info(
                "serving http://%s:%s/ (scheduler %s)",
                host,
                port,
                "embedded" if embedded else "not embedded: run manage.py runscheduler",
            ),
        )

        from scheduler_app import alerts

        alert_workers: list[alerts.AlertWorker | None] = []  # the embedded scheduler's alert thread
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen > 1:
                log.warning("second %s: exiting at once", signal.Signals(signum).name)
                sys.stderr.flush()
                os._exit(1)
            log.info("%s: stopping (a second signal exits at once)", signal.Signals(signum).name)
            if reactor.running:
                reactor.stop()

        def on_running() -> None:
            loop = asyncio.get_event_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig)
            if engine is not None:
                task = loop.create_task(engine.start())
                task.add_done_callback(_report_start_failure)
                alert_workers.append(alerts.start_worker())

        def before_shutdown() -> Any:
            for worker in alert_workers:
                if worker is not None:
                    worker.stop()
            if engine is None:
                return None
            return defer.Deferred.fromFuture(asyncio.ensure_future(engine.stop()))

        reactor.callWhenRunning(on_running)
        reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
        server.run()
        if server.listen_failure is not None:
            # daphne just returns when it cannot listen: without this the command exited 0 and
            # a supervisor (or ./dev.sh run) took a server that never served for a clean stop.
            failure = server.listen_failure.value
            if (
                isinstance(failure, CannotListenError)
                and getattr(failure.socketError, "errno", None) == errno.EADDRINUSE
            ):
                raise CommandError(f"port {port} on {host} is in use")
            raise CommandError(f"cannot listen on {host}:{port}: {server.listen_failure.getErrorMessage()}")


def _report_start_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the embedded scheduler failed to start", exc_info=task.exception())
