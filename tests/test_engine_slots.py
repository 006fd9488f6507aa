"""Slot math: the same due times on every node, spread across the interval."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler_app import slots


def test_slots_are_deterministic_and_on_the_grid():
    now = slots.to_ms(datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=UTC))
    first = slots.slot_after(now, job_id=42, interval_seconds=10)
    assert now < first <= now + 10_000
    assert slots.slot_after(now, 42, 10) == first
    assert slots.is_slot(first, 42, 10) and slots.is_slot(first + 30_000, 42, 10)
    assert not slots.is_slot(first + 1, 42, 10)
    assert slots.slot_at_or_before(first, 42, 10) == first
    assert slots.slot_at_or_before(first - 1, 42, 10) == first - 10_000


def test_offsets_spread_jobs_of_one_interval():
    offsets = [slots.offset_ms(job_id, 5) for job_id in range(1, 1001)]
    assert all(0 <= o < 5000 for o in offsets)
    per_second = [sum(1 for o in offsets if s * 1000 <= o < (s + 1) * 1000) for s in range(5)]
    assert min(per_second) > 150, per_second  # ~200 each: no burst at one instant


def test_datetime_conversion_is_exact():
    for ms in (0, 1, 999, 1_764_000_000_123, slots.ANCHOR_MS + 7):
        assert slots.to_ms(slots.to_datetime(ms)) == ms
    assert slots.to_datetime(slots.ANCHOR_MS) == slots.ANCHOR
