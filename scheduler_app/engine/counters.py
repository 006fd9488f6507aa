"""What the engine did, counted: small numbers any part may bump and anyone may read.

The schedule counts the slots it did not run (coalesced after a stall or downtime, skipped
because the job was still running); the claimer and the supervisor count claims and runs.
Readers (metrics, pages, the benchmark) take ``as_dict()``; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class Counters:
    #: slots handed to the claimer
    due: int = 0
    #: older slots folded into a later one (only the latest due slot of a job runs)
    coalesced: int = 0
    #: slots skipped because the job was still running (or its claim still in flight)
    skipped_overlap: int = 0
    #: claims this node won, and lost (another node, or the job ran elsewhere)
    claimed: int = 0
    lost_claims: int = 0
    #: due slots not claimed because this node could not confirm it was alive (fenced)
    skipped_fenced: int = 0
    #: runs started and runs finished by this node
    started: int = 0
    finished: int = 0
    #: full and partial reconciles of the job table
    reconciles: int = 0
    #: slots missed while no node ran the job, run once when a node took it up (after downtime)
    caught_up: int = 0
    #: retries queued for failed or timed-out runs
    retries_scheduled: int = 0
    #: runs cancelled on someone's request (not by a timeout or a shutdown)
    cancelled: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
