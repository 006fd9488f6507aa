"""``manage.py reloadplugin <package>``: every running scheduler re-imports the plugin's code.

The new code is checked here first (``services.reload_plugin``): if it does not load, the
error is printed, nothing changes, the old code keeps running and the exit code is 1.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler_app import audit, services
from scheduler_app.models import Plugin
from scheduler_app.plugin_host import PluginLoadError


class Command(BaseCommand):
    help = "Reload a registered plugin's code in every running scheduler (checked here first)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("package", help="the plugin's package (dotted path), or its id")

    def handle(self, *args: Any, **options: Any) -> None:
        ref = options["package"].strip()
        plugin = Plugin.objects.filter(package=ref).first()
        if plugin is None and ref.isdigit():
            plugin = Plugin.objects.filter(pk=int(ref)).first()
        if plugin is None:
            raise CommandError(f"no registered plugin {ref!r} (see 'manage.py plugins')")
        try:
            with audit.acting(via="command"):
                plugin = services.reload_plugin(plugin)
        except PluginLoadError as exc:
            raise CommandError(f"not reloaded, the old code keeps running: {exc}") from exc
        self.stdout.write(f"reloaded {plugin.package}: code version {plugin.code_version}")
