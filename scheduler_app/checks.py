"""System checks (``manage.py check``) for registered plugins; the ids are stable.

- ``scheduler_app.E001``: a registered plugin's code does not load (the message says why and
  where it looked). Its jobs would fail every run.
- ``scheduler_app.W002``: a stored job config no longer validates against its plugin's
  Config (the plugin changed); its runs will fail until the job is edited.

The checks read the database; when it is not there yet (before ``migrate``) they stay
silent rather than break every management command.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.db import DatabaseError

#: Stop validating job configs after this many, so a huge table never slows every command.
MAX_JOBS_CHECKED = 20_000


@checks.register("scheduler_app")
def check_plugins(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from scheduler_app import plugin_host
    from scheduler_app.models import Job, Plugin

    if app_configs is not None and not any(c.label == "scheduler_app" for c in app_configs):
        return []
    messages: list[checks.CheckMessage] = []
    try:
        plugins = list(Plugin.objects.all())
        broken: set[int] = set()
        for plugin in plugins:
            try:
                plugin_host.get_plugin(plugin.package)
            except plugin_host.PluginLoadError as exc:
                broken.add(plugin.pk)
                messages.append(
                    checks.Error(
                        f"Plugin {plugin.display_name!r} (pk {plugin.pk}) does not load: {exc}",
                        hint="Fix the plugin's code, then 'manage.py reloadplugin <package>'; or disable the plugin.",
                        obj=plugin,
                        id="scheduler_app.E001",
                    )
                )
        jobs = Job.objects.select_related("plugin").exclude(plugin_id__in=broken).order_by("-updated_at")
        for job in jobs[:MAX_JOBS_CHECKED].iterator():
            try:
                plugin_host.get_plugin(job.plugin.package).validate(job.config)
            except plugin_host.ConfigValidationError as exc:
                messages.append(
                    checks.Warning(
                        f"Job {job.pk} (user {job.user_id}, plugin {job.plugin.display_name}) has a config that "
                        f"no longer validates: {exc}",
                        hint="Edit the job (its form shows the errors on the fields) or delete it.",
                        obj=job,
                        id="scheduler_app.W002",
                    )
                )
    except DatabaseError:
        # No tables yet (before migrate) or no database: nothing registered to check.
        return []
    return messages
