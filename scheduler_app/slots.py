"""Deterministic slot math: when each job is due, the same answer on every node.

A job's slots are ``ANCHOR + offset(job) + k * interval`` in whole milliseconds. Every
scheduler node computes the same slots without talking to the others, so the unique
``(job, slot)`` row is a claim they can race for. The per-job offset spreads the jobs of one
interval across it (a multiplicative hash of the job id), so 10,000 jobs every 5 s become a
steady 2,000 runs/s instead of one burst of 10,000.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: Fixed origin of all slots (UTC); never change it, or slots shift under running schedulers.
ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ANCHOR_MS = int((ANCHOR - _EPOCH).total_seconds()) * 1000

# Knuth's multiplicative hash constant: consecutive ids land far apart within the interval.
_GOLDEN = 2654435761


def offset_ms(job_id: int, interval_seconds: int) -> int:
    """The job's fixed offset within its interval, in milliseconds (0 <= offset < interval)."""
    return (job_id * _GOLDEN) % (interval_seconds * 1000)


def slot_at_or_before(now_ms: int, job_id: int, interval_seconds: int) -> int:
    """The latest slot <= ``now_ms`` (epoch milliseconds)."""
    period = interval_seconds * 1000
    base = ANCHOR_MS + offset_ms(job_id, interval_seconds)
    return base + ((now_ms - base) // period) * period


def slot_after(now_ms: int, job_id: int, interval_seconds: int) -> int:
    """The first slot strictly after ``now_ms``."""
    return slot_at_or_before(now_ms, job_id, interval_seconds) + interval_seconds * 1000


def is_slot(slot_ms: int, job_id: int, interval_seconds: int) -> bool:
    return slot_at_or_before(slot_ms, job_id, interval_seconds) == slot_ms


def to_datetime(epoch_ms: int) -> datetime:
    """Exact conversion (integer arithmetic: no float rounding, so every node stores the same value)."""
    return _EPOCH + timedelta(milliseconds=epoch_ms)


def to_ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
