"""jobscheduler's Django app.

Plugin authors import the contract from here: ``from scheduler_app import hookimpl, JobPlugin``.
Only the contract is re-exported; it does not touch Django models, so importing it is safe
before Django is set up.
"""

from __future__ import annotations

from scheduler_app.contract import JobPlugin, RunContext, hookimpl, hookspec

__all__ = ["JobPlugin", "RunContext", "hookimpl", "hookspec"]
