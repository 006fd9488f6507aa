"""Retention: prune old runs and their log lines inside the scheduler, in small batches.

Two rules (``SCHEDULER["RETAIN_DAYS"]``, ``SCHEDULER["RETAIN_RUNS_PER_JOB"]``): finished runs
older than RETAIN_DAYS go, and each job keeps at most RETAIN_RUNS_PER_JOB finished runs.
Each batch deletes at most ``batch`` runs (with their lines) in one short transaction, so no
lock is held for long; the engine finds them with reads in its reader thread (``prunable``:
the per-job count scans the runs, which must not hold up claims) and deletes them in its
writer thread (``delete_runs``), yielding between batches. Queued and
running runs are never pruned. Several nodes pruning at once is harmless (deletes are
idempotent).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count

from scheduler_app.models import JobRun, LogLine

FINISHED = [s.value for s in JobRun.FINISHED]


def prunable(now: datetime, retain_days: float, retain_runs_per_job: int, batch: int = 500) -> list[int]:
    """Up to ``batch`` ids of runs that break a retention rule (reads only)."""
    cutoff = now - timedelta(days=retain_days)
    ids = list(
        JobRun.objects.filter(status__in=FINISHED, finished_at__lt=cutoff)
        .order_by()
        .values_list("id", flat=True)[:batch]
    )
    if len(ids) < batch:
        ids = list(dict.fromkeys(ids + _over_count(retain_runs_per_job, batch - len(ids))))
    return ids


def delete_runs(ids: list[int]) -> int:
    """Delete these runs and their log lines in one short transaction; return how many runs went."""
    if not ids:
        return 0
    with transaction.atomic():
        LogLine.objects.filter(run_id__in=ids).delete()
        _, by_model = JobRun.objects.filter(id__in=ids, status__in=FINISHED).delete()
    return by_model.get(JobRun._meta.label, 0)


def prune_batch(now: datetime, retain_days: float, retain_runs_per_job: int, batch: int = 500) -> int:
    """Delete up to ``batch`` runs that break a retention rule; return how many were deleted."""
    return delete_runs(prunable(now, retain_days, retain_runs_per_job, batch))


def _over_count(keep: int, limit: int) -> list[int]:
    crowded = (
        JobRun.objects.filter(status__in=FINISHED)
        .values("job_id")
        .annotate(n=Count("id"))
        .filter(n__gt=keep)
        .order_by()
        .values_list("job_id", flat=True)[:50]
    )
    ids: list[int] = []
    for job_id in crowded:
        newest = JobRun.objects.filter(job_id=job_id).order_by("-slot", "-id").values_list("slot", flat=True)
        boundary = newest[keep - 1 : keep]
        if not boundary:
            continue
        ids += list(
            JobRun.objects.filter(job_id=job_id, status__in=FINISHED, slot__lt=boundary[0])
            .order_by("slot")
            .values_list("id", flat=True)[: limit - len(ids)]
        )
        if len(ids) >= limit:
            break
    return ids
