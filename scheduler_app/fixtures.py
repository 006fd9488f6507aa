"""Fixtures (``manage.py loaddata``) obey the same rules as every other path that stores a job.

``loaddata`` saves objects raw (``pre_save`` with ``raw=True``), bypassing ``services``; the
handler here validates each job's config against its plugin (``services.validate_config``, the
one rule) and stores the normalised config, and refuses NUL in any text of this app's models
(PostgreSQL cannot store it; SQLite would, so a fixture that loads in development would not
load in production). A refusal is a ``ValueError``: loaddata names the object and the fixture
file around our message, and its transaction keeps nothing of the fixture. The ``loaddata``
command of this app (management/commands/loaddata.py) turns it into one line, exit code 1.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from scheduler_app import services
from scheduler_app.models import Job, Plugin


class FixtureRefused(ValueError):
    """An object of a fixture breaks a rule; the message says which field and why."""


def check_fixture_object(sender: type[models.Model], instance: models.Model, raw: bool = False, **_: Any) -> None:
    """``pre_save`` receiver for this app's models; only fixtures (``raw=True``) are checked here."""
    if not raw:
        return  # every other path goes through services, which validates already
    for field in instance._meta.concrete_fields:
        value = getattr(instance, field.attname)
        if isinstance(field, (models.CharField, models.TextField)) and isinstance(value, str) and "\x00" in value:
            raise FixtureRefused(f"{field.name}: contains a NUL character (\\u0000), which cannot be stored")
    if isinstance(instance, Job):
        _check_job(instance)


def _check_job(job: Job) -> None:
    plugin = Plugin.objects.filter(pk=job.plugin_id).first()
    if plugin is None:
        # Checked only once the plugin is in the database: fixtures list plugins before jobs
        # (dumpdata sorts them so), and a job cannot be validated without its plugin's code.
        raise FixtureRefused(f"plugin: no plugin with pk={job.plugin_id} (list plugins before their jobs)")
    try:
        job.config = services.validate_config(plugin, job.config)
    except services.ConfigValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(map(str, e.loc))}: {e.message}" if e.loc else f"config: {e.message}" for e in exc.errors
        )
        raise FixtureRefused(f"invalid config for {plugin.package}: {problems}") from None
