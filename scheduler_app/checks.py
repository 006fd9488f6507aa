"""System checks (``manage.py check``) for registered plugins; the ids are stable.

- ``scheduler_app.E001``: a registered plugin's code does not load (the message says why and
  where it looked). Its jobs would fail every run.
- ``scheduler_app.W002``: a stored job config no longer validates against its plugin's
  Config (the plugin changed); its runs will fail until the job is edited.

Only an explicit ``manage.py check`` reports E001 as an error. Every other command
(``runscheduler``, ``serve``, ``runserver``, ``migrate``...) also runs system checks, and
Django refuses to start on any error: one broken plugin must never stop the scheduler or the
web, so there the same finding is the warning ``scheduler_app.W001`` and the job scan
(W002, one query plus a validation per job) is skipped to keep start-up fast.

The checks read the database; when it is not there yet (before ``migrate``) they stay
silent rather than break every management command.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core import checks
from django.db import DatabaseError

#: Stop validating job configs after this many, so a huge table never slows the check.
MAX_JOBS_CHECKED = 20_000


def _explicit_check() -> bool:
    """True when the ``check`` management command (or a subclass) is what runs the checks.

    Django passes no hint of the calling command to check functions, so look up the stack.
    """
    from django.core.management.commands.check import Command as CheckCommand

    frame: Any = sys._getframe(1)
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), CheckCommand):
            return True
        frame = frame.f_back
    return False


@checks.register("scheduler_app")
def check_plugins(app_configs: Any = None, *, explicit: bool | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report registered plugins that do not load, and (when explicit) invalid stored configs.

    :param explicit: force the ``manage.py check`` behaviour (``None``: detect it).
    """
    from scheduler_app import health, plugin_host
    from scheduler_app.models import Job, Plugin

    if app_configs is not None and not any(c.label == "scheduler_app" for c in app_configs):
        return []
    if explicit is None:
        explicit = _explicit_check()
    messages: list[checks.CheckMessage] = []
    if health.pool_error():
        # A web process started while its database is down: nothing to check, and asking the
        # pool with a request's wait would hold up listening (and /readyz's 503) by 20 s.
        return []
    try:
        plugins = list(Plugin.objects.all())
        broken: set[int] = set()
        for plugin in plugins:
            try:
                plugin_host.get_plugin(plugin.package)
            except plugin_host.PluginLoadError as exc:
                broken.add(plugin.pk)
                level, check_id = (checks.Error, "E001") if explicit else (checks.Warning, "W001")
                messages.append(
                    level(
                        f"Plugin {plugin.display_name!r} (pk {plugin.pk}) does not load: {exc}",
                        hint="Fix the plugin's code, then 'manage.py reloadplugin <package>'; or disable the plugin.",
                        obj=plugin,
                        id=f"scheduler_app.{check_id}",
                    )
                )
        if not explicit:
            return messages
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
