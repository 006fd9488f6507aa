"""The scheduler engine, in parts (docs/architecture.md, "Engine", draws the flow):

slot -> claim -> run -> record -> stream

- ``schedule``: pure; job specs in, due slots out, ``now`` passed in (heap, coalescing, overlap).
- ``claimer``: claims due slots and queued manual runs in batches through the writer thread.
- ``launch``: what a won claim needs to start (logger, context, first lines) and its first
  step, ``prepare`` (the plugin, the validated config; a config nothing can change is shared).
- ``supervisor``: runs a plugin as a task with its timeout and cancellation; records the end.
  ``runplugin`` and ``scheduler_app.testing`` run plugins through it too.
- ``registry``: loaded plugins per code version (or their load error), imported off the loop.
- ``reconcile``: keeps the schedule in step with the ``Job`` table (notifications + polling).
- ``heartbeat``: this node's liveness, the live members (the division of jobs), loss detection
  and fencing (rules in ``scheduler_app.cluster``); ``division``: applies its verdicts to this
  node (fence its runs, claim the jobs it gains); ``retries``: queues the next attempt of a
  failed run's slot; ``upkeep``: retention and SQLite
  checkpoints; ``watchdog``: reports a blocked loop and the plugin blocking it.
- ``engine``: wires the parts, owns the loops and the start/stop sequence.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Engine"]


def __getattr__(name: str) -> Any:
    # Lazy: ``scheduler_app.testing`` imports the supervisor without the whole engine.
    if name == "Engine":
        from scheduler_app.engine.engine import Engine

        return Engine
    raise AttributeError(name)
