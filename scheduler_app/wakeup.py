"""An event loop that runs checks the moment it wakes up, before any timer or task runs.

Why: a process frozen by SIGSTOP (or a VM freeze) wakes up with every timer overdue. A plugin
whose ``asyncio.sleep`` ended during the freeze would take its next step in the loop's first
iteration, possibly after another node took the job over. The node must first see that its
lease expired and cancel its runs (``cluster.Lease``); a check on a timer of its own would race
with the plugin's timers. Here the check runs inside ``select()``, which every loop iteration
calls before it processes I/O events and moves overdue timers to the ready queue: a run
cancelled there gets ``CancelledError`` at its next step instead of taking it.

``runscheduler`` builds its loop with ``new_event_loop``; an engine embedded in another loop
(daphne) falls back to its periodic check (every 0.1 s).
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("scheduler_app.engine")

_hooks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Callable[[], None]]] = weakref.WeakKeyDictionary()


class _WakeupSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[Callable[[], None]] = []

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        events: list[tuple[Any, int]] = super().select(timeout)
        for hook in self.hooks:
            try:
                hook()
            except Exception:  # a failing check must not stop the loop
                log.exception("a wake-up check failed")
        return events


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A selector event loop whose ``on_wakeup`` hooks run after every ``select()``."""
    selector = _WakeupSelector()
    loop = asyncio.SelectorEventLoop(selector)
    _hooks[loop] = selector.hooks
    return loop


def on_wakeup(loop: asyncio.AbstractEventLoop, hook: Callable[[], None]) -> bool:
    """Run ``hook`` (cheap, never raising) each time ``loop`` wakes up; False if the loop can't."""
    hooks = _hooks.get(loop)
    if hooks is None:
        return False
    hooks.append(hook)
    return True


def remove(loop: asyncio.AbstractEventLoop, hook: Callable[[], None]) -> None:
    hooks = _hooks.get(loop)
    if hooks is not None and hook in hooks:
        hooks.remove(hook)
