"""``manage.py runplugin <package> --config '<json>'``: one execution in the terminal, with its live log.

Exit codes: 0 the run succeeded, 1 the run failed (or timed out), 2 the plugin does not load
or the config is invalid, 130 cancelled (Ctrl-C or SIGTERM: the run is asked to stop, and
cut after a 5-second grace; a second Ctrl-C cuts it at once). No database is needed unless
``--job`` is used, and no scheduler: this is the author's loop of "edit, run, read the log".
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from scheduler_app import plugin_host
from scheduler_app.plugin_host import ConfigValidationError, PluginLoadError
from scheduler_app.testing import LogRecordLine, arun_plugin

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130

COLOURS = {"DEBUG": "\x1b[2m", "INFO": "", "WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}


class Command(BaseCommand):
    help = "Run a plugin once in the terminal and print its log as it runs (exit 0 ok, 1 failed, 2 bad input)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("package", nargs="?", help="dotted path, e.g. plugins.sample_plugin@v0_1_0.plugin.Plugin")
        parser.add_argument("--config", default=None, help="the config as a JSON object (default: {})")
        parser.add_argument("--config-file", default=None, help="read the config from this JSON file")
        parser.add_argument("--job", type=int, default=None, help="run with the stored config of this job id")
        parser.add_argument("--timeout", type=float, default=None, help="cancel the run after this many seconds")
        parser.add_argument("--quiet-debug", action="store_true", help="hide DEBUG lines")

    def handle(self, *args: Any, **options: Any) -> None:
        package, raw = self._input(options)
        try:
            plugin_host.get_plugin(package).validate(raw)
        except PluginLoadError as exc:
            self.stderr.write(f"error: {exc}")
            sys.exit(EXIT_BAD_INPUT)
        except ConfigValidationError as exc:
            self.stderr.write("error: the config is invalid:")
            for error in exc.errors:
                self.stderr.write(f"  {'.'.join(map(str, error.loc)) or '(config)'}: {error.message}")
            sys.exit(EXIT_BAD_INPUT)
        code = asyncio.run(self._run(package, raw, options))
        if code:
            sys.exit(code)

    def _input(self, options: dict[str, Any]) -> tuple[str, Any]:
        package = options["package"]
        raw: Any = {}
        if options["job"] is not None:
            from scheduler_app.models import Job

            job = Job.objects.select_related("plugin").filter(pk=options["job"]).first()
            if job is None:
                self.stderr.write(f"error: no job with id {options['job']}")
                sys.exit(EXIT_BAD_INPUT)
            package = package or job.plugin.package
            raw = job.config
        if not package:
            self.stderr.write("error: give a package (or --job)")
            sys.exit(EXIT_BAD_INPUT)
        text = options["config"]
        if options["config_file"]:
            with open(options["config_file"], encoding="utf-8") as f:
                text = f.read()
        if text is not None:
            try:
                raw = json.loads(text)
            except ValueError as exc:
                self.stderr.write(f"error: --config is not valid JSON: {exc}")
                sys.exit(EXIT_BAD_INPUT)
            if not isinstance(raw, dict):
                self.stderr.write('error: --config must be a JSON object, e.g. \'{"name": "Ada"}\'')
                sys.exit(EXIT_BAD_INPUT)
        return package, raw

    async def _run(self, package: str, raw: dict[str, Any], options: dict[str, Any]) -> int:
        loop = asyncio.get_running_loop()
        cancel = asyncio.Event()
        colour = self.stdout.isatty()
        quiet_debug = options["quiet_debug"]
        task: asyncio.Future | None = None

        def on_signal() -> None:
            if cancel.is_set():
                if task is not None:
                    task.cancel()  # the second Ctrl-C: stop waiting for the grace period
                return
            self.stderr.write("cancelling (Ctrl-C again to stop at once) ...")
            cancel.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)

        def show(line: LogRecordLine) -> None:
            if quiet_debug and line.levelname == "DEBUG":
                return
            stamp = datetime.now().strftime("%H:%M:%S")
            text = f"{stamp} {line.levelname:<8} {line.message}"
            if colour and COLOURS.get(line.levelname):
                text = f"{COLOURS[line.levelname]}{text}\x1b[0m"
            self.stdout.write(text)
            self.stdout.flush()

        self.stderr.write(f"running {package} with {json.dumps(_masked(package, raw))}")
        task = asyncio.ensure_future(
            arun_plugin(package, raw, cancel=cancel, timeout=options["timeout"], on_record=show, trigger="manual")
        )
        try:
            result = await task
        except asyncio.CancelledError:
            self.stderr.write("cancelled")
            return EXIT_CANCELLED
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if result.cancelled:
            self.stderr.write("cancelled")
            return EXIT_CANCELLED
        if result.timed_out:
            self.stderr.write(f"failed: {result.error}")
            return EXIT_FAILED
        if result.error is not None:
            self.stderr.write(result.traceback.rstrip())
            self.stderr.write(f"failed: {type(result.error).__name__}: {result.error}")
            return EXIT_FAILED
        self.stderr.write(f"succeeded ({len(result.records)} log lines)")
        return EXIT_OK


def _masked(package: str, raw: dict[str, Any]) -> Any:
    """The config as it may be printed: validated, with every secret (Optional ones too) masked by Pydantic."""
    try:
        model = plugin_host.get_plugin(package).validate(raw)
    except (PluginLoadError, ConfigValidationError):
        return "(not shown)"
    return model.model_dump(mode="json", by_alias=True)
