"""The hooks a jobscheduler plugin implements (each documented in docs/PLUGIN_DEVELOPMENT.md).

Dispatch rule for all three: a hook call reaches one plugin only (the host gives every
plugin its own PluginManager) and is made with keyword arguments, so an implementation's
parameter names must match these (it may take fewer). ``tests/test_docs.py`` fails when a
hook here lacks a section in the doc or a test.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from scheduler_app.contract import RunContext, hookspec


@hookspec(firstresult=True)
def schema() -> dict[str, Any]:
    """Return the JSON schema of the plugin's configuration.

    Called when the plugin loads (an unusable schema is a load error) and for every form.

    :returns: a JSON schema object (``{"type": "object", "properties": ...}``), usually
        ``Config.model_json_schema()``. The host converts it for the form widget.
    """
    raise NotImplementedError  # a spec: implementations live in plugins


@hookspec(firstresult=True)
def config(raw: dict[str, Any]) -> BaseModel:
    """Validate a raw configuration and return it as a Pydantic model.

    Called when a config is saved (any path) and before every run, with the stored config.

    :param raw: the stored or submitted configuration, a JSON object.
    :returns: the validated model; raise ``pydantic.ValidationError`` when invalid.
    """
    raise NotImplementedError  # a spec: implementations live in plugins


@hookspec
async def run(config: BaseModel, context: RunContext) -> None:
    """Perform one execution of the job (a coroutine; the host awaits it).

    Called at each due slot of an active job, on "Run now", and by ``runplugin``/``run_plugin``.

    :param config: the validated configuration returned by ``config``.
    :param context: who and what is running, the run's logger and its cancellation event.
    :returns: nothing; raise to fail the run. Never ``firstresult``: pluggy has no async
        support, so the host awaits the coroutine the hook returns.
    """
