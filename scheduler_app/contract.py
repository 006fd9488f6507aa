"""The plugin contract: the pluggy markers, the run context and the base class authors extend.

This module must stay importable without Django: plugins import it, and so do tools that
only inspect plugins. Nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import pluggy
from pydantic import BaseModel, ConfigDict

PROJECT_NAME = "jobscheduler"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class EmptyConfig(BaseModel):
    """The config of a plugin that takes no settings."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class RunContext:
    """What a plugin's ``run`` is told about the execution it performs.

    ``logger`` is a standard :class:`logging.Logger`; every record it emits becomes a log line
    of this run, stored and streamed live. ``cancelled`` is set when the run must stop
    (timeout, shutdown); a long-running plugin should check :meth:`should_stop` or await
    :meth:`sleep`, which returns early on cancellation.
    """

    logger: logging.Logger
    run_id: int | None = None
    job_id: int | None = None
    user_id: int | None = None
    username: str = ""
    plugin_id: int | None = None
    package: str = ""
    slot: datetime | None = None
    trigger: str = "manual"
    #: which try of this slot: 1 for the first run, 2, 3... for retries (``Job.max_retries``)
    attempt: int = 1
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    extra: dict[str, Any] = field(default_factory=dict)

    def should_stop(self) -> bool:
        """True once the run has been asked to stop."""
        return self.cancelled.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True if cancellation cut the sleep short."""
        try:
            await asyncio.wait_for(self.cancelled.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


class JobPlugin:
    """Base class for plugins: implements ``schema`` and ``config`` from ``Config``.

    A plugin subclasses it, sets ``Config`` to a Pydantic model and writes an async ``run``
    decorated with ``@hookimpl``.
    """

    Config: ClassVar[type[BaseModel]] = EmptyConfig
    #: Shown in the admin's list of available plugins.
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @hookimpl
    def schema(self) -> dict[str, Any]:
        return self.Config.model_json_schema()

    @hookimpl
    def config(self, raw: dict[str, Any]) -> BaseModel:
        return self.Config.model_validate(raw)
