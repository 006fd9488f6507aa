"""``manage.py plugins``: list the plugins that are available, and register one in one step.

    manage.py plugins                      # every plugin found, with status
    manage.py plugins register <package> --interval 60 [--name N] [--disabled]

Found in: the repo's ``plugins/``, ``MODULE_PATH`` folders, and installed distributions'
``jobscheduler`` entry points (``plugin_host.discover()``).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler_app import audit, plugin_host, services
from scheduler_app.models import Plugin
from scheduler_app.plugin_host import PluginLoadError


class Command(BaseCommand):
    help = "List available plugins (with load status), or 'register <package> --interval N'."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", nargs="?", default="list", choices=["list", "register"])
        parser.add_argument("package", nargs="?", help="for register: the dotted path to the plugin class")
        parser.add_argument("--interval", type=int, default=None, help="for register: seconds between runs")
        parser.add_argument("--name", default="", help="for register: the name users see")
        parser.add_argument("--description", default="", help="for register (default: the plugin's own)")
        parser.add_argument("--disabled", action="store_true", help="for register: register it disabled")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "register":
            self.register(options)
        else:
            self.list()

    def list(self) -> None:
        registered = {p.package: p for p in Plugin.objects.all()}
        available = plugin_host.discover()
        for item in available:
            plugin = registered.pop(item.package, None)
            if plugin is not None:
                state = "registered" + ("" if plugin.enabled else ", disabled")
                reg = f"[{state}: id {plugin.pk}, every {plugin.interval}s]"
            else:
                reg = "[not registered]"
            status = "ok" if item.ok else "BROKEN"
            version = f" {item.version}" if item.version else ""
            self.stdout.write(f"{status:<6} {item.package}  ({item.name}{version}, {item.source}) {reg}")
            if item.error:
                self.stdout.write(f"         error: {item.error}")
            elif item.description:
                self.stdout.write(f"         {item.description}")
        for plugin in registered.values():
            try:
                plugin_host.check_package(plugin.package)
                status, note = "ok", "registered, not found by discovery (loaded by its dotted path)"
            except PluginLoadError as exc:
                status, note = "BROKEN", f"registered (id {plugin.pk}) but does not load: {exc.reason}"
            self.stdout.write(f"{status:<6} {plugin.package}  [{note}]")
        self.stdout.write(f"looked in: {plugin_host.search_path_description()}")

    def register(self, options: dict[str, Any]) -> None:
        package = options["package"]
        if not package:
            raise CommandError("register needs a package: manage.py plugins register <package> --interval 60")
        if not options["interval"] or options["interval"] <= 0:
            raise CommandError("register needs --interval N (seconds, > 0)")
        try:
            with audit.acting(via="command"):
                plugin = services.register_plugin(
                    package,
                    interval=options["interval"],
                    name=options["name"],
                    description=options["description"],
                    enabled=not options["disabled"],
                )
        except PluginLoadError as exc:
            raise CommandError(f"not registered, the code does not load: {exc}") from exc
        except services.JobRuleError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"registered {plugin.package} as {plugin.display_name!r} (id {plugin.pk})")
