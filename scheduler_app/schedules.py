"""A job's schedule, as pure functions: parse, describe, and compute its slots.

No Django, no database, no clock: every function takes the time it needs (epoch
milliseconds, like ``slots``) and returns the same answer on every node, so the unique
``(job, slot)`` claim keeps each slot to one run whatever the number of schedulers.

A schedule is text (``Job.schedule``):

- empty: the plugin's interval, with today's slots (``slots``: a fixed anchor plus a
  per-job offset plus k * interval);
- ``every 30s`` / ``every 5m`` / ``every 2h`` / ``every 1d``: an interval of exact elapsed
  time, anchored the same way (so a time zone changes nothing but how times are shown);
- a cron expression: 5 fields (minute hour day-of-month month day-of-week), 6 fields with
  a leading seconds field (``*/2 * * * * *``: every even second), or ``@daily`` and
  friends. Standard semantics (0 or 7 = Sunday; when both day fields are restricted a day
  matches either), evaluated on wall-clock time in the job's time zone.

Daylight saving, for cron schedules (docs/architecture.md says why):

- a wall time that does not exist (the clock jumps from 02:00 to 03:00) is skipped;
- a wall time that happens twice (the clock goes back from 03:00 to 02:00) runs once, at
  its first occurrence.

croniter matches the fields on naive wall-clock times (no time zone, so none of its DST
handling is involved); ``zoneinfo`` turns each wall time into an instant with the two
rules above, here, where they are tested.

Jitter: a job may ask for up to ``jitter_seconds`` of delay, the same on every node for a
given (job, slot) (a hash, not a random draw). The jittered time is the slot: the claim and
the run record use it. Jitter must stay below the smallest gap between slots, so slots keep
their order.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter
from croniter.croniter import CroniterBadCronError, CroniterBadDateError, CroniterError

from scheduler_app import slots

__all__ = [
    "Schedule",
    "ScheduleError",
    "Timing",
    "describe",
    "jitter_ms",
    "min_gap_seconds",
    "next_slot",
    "next_slots",
    "parse",
    "retry_after",
    "retry_delay_seconds",
    "slot_at_or_before",
    "zone",
]

Kind = Literal["plugin", "interval", "cron"]

#: How a moment is written for people where the server writes it (a slot in a run's log line, the
#: pages' text before their script shows the browser's zone, the admin): the zone's abbreviation
#: included, since the zone is the job's or the server's, not the reader's.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
#: How far a cron schedule may go without a slot before it counts as "never runs".
MAX_YEARS_WITHOUT_SLOT = 10
#: Candidate wall times examined before giving up (each skipped DST gap costs one).
_MAX_CANDIDATES = 10_000

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"^every\s+(\d+)\s*([smhd])$", re.IGNORECASE)
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


class ScheduleError(ValueError):
    """A schedule, time zone or jitter that cannot be used; the message is for the user."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule. ``text`` is the normalised form to store."""

    kind: Kind
    text: str = ""
    #: interval schedules: seconds between slots
    seconds: int = 0
    #: cron schedules: the 5- or 6-field expression croniter reads (aliases expanded)
    cron: str = ""

    @property
    def has_seconds(self) -> bool:
        return self.kind == "cron" and len(self.cron.split()) == 6


PLUGIN_INTERVAL = Schedule("plugin")


def parse(text: str | None) -> Schedule:
    """Parse ``Job.schedule`` text; raise ScheduleError with a message a user can act on."""
    text = " ".join((text or "").split())
    if not text:
        return PLUGIN_INTERVAL
    if text.lower().startswith("every"):
        match = _INTERVAL.match(text)
        if not match:
            raise ScheduleError(
                f"“{text}” is not an interval: write every, a whole number and a unit, e.g. every 30s, every 5m, "
                "every 2h, every 1d."
            )
        count, unit = int(match.group(1)), match.group(2).lower()
        if count <= 0:
            raise ScheduleError("An interval must be at least 1 second.")
        return Schedule("interval", f"every {count}{unit}", seconds=count * _UNITS[unit])
    expression = _ALIASES.get(text.lower(), text)
    if text.startswith("@") and expression == text:
        raise ScheduleError(f"“{text}” is not known: use one of {', '.join(sorted(_ALIASES))}.")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"“{text}” has {len(fields)} field{'s' if len(fields) != 1 else ''}: a cron schedule has 5 "
            "(minute hour day month weekday) or 6 (second first), and an interval reads like every 5m."
        )
    _compiled(expression)  # raises ScheduleError
    return Schedule("cron", text if text.startswith("@") else expression, cron=expression)


@lru_cache(maxsize=4096)
def _compiled(expression: str) -> croniter:
    """A croniter for ``expression``, validated once; read (``expanded``), never iterated."""
    try:
        itr = croniter(expression, datetime(2000, 1, 1), second_at_beginning=len(expression.split()) == 6)
    except CroniterBadCronError as exc:
        raise ScheduleError(f"“{expression}” is not a valid cron expression: {_croniter_message(exc)}") from exc
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"“{expression}” is not a valid cron expression.") from exc
    probe = croniter(
        expression,
        datetime(2000, 1, 1),
        second_at_beginning=len(expression.split()) == 6,
        max_years_between_matches=MAX_YEARS_WITHOUT_SLOT,
    )
    try:
        probe.get_next(datetime)
    except CroniterBadDateError as exc:
        raise ScheduleError(f"“{expression}” never runs (no such date).") from exc
    return itr


def _croniter_message(exc: Exception) -> str:
    text = str(exc)
    if "out of range" in text or "out of bands" in text:
        return "a value is out of range (second and minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-7)."
    if "not acceptable" in text and "step" not in text:
        return (
            "a field holds something cron does not read (numbers, *, ranges a-b, lists a,b, steps */n, "
            "months jan-dec, weekdays sun-sat)."
        )
    # croniter repeats the whole expression in brackets; the user just typed it.
    text = re.sub(r"^\[[^\]]*\]\s*", "", text).replace("field 0", "the first field")
    return text.rstrip(".") + "."


# Iterating mutates a croniter, so each thread keeps its own, built from the cached template.
_local = threading.local()


def _iterator(expression: str, start: datetime) -> croniter:
    cache: dict[str, croniter] | None = getattr(_local, "iters", None)
    if cache is None:
        cache = _local.iters = {}
    itr = cache.get(expression)
    if itr is None:
        _compiled(expression)  # validates, with the user-facing error
        if len(cache) > 1024:
            cache.clear()
        itr = cache[expression] = croniter(
            expression,
            start,
            second_at_beginning=len(expression.split()) == 6,
            max_years_between_matches=MAX_YEARS_WITHOUT_SLOT,
        )
    itr.set_current(start, force=True)
    return itr


# --- time zones ----------------------------------------------------------------------------


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name; ScheduleError if there is none."""
    if not name or name != name.strip():
        raise ScheduleError("Choose a time zone, e.g. Europe/Paris or UTC.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"“{name}” is not a time zone: use an IANA name such as Europe/Paris or UTC.") from exc


@lru_cache(maxsize=1)
def zone_names() -> list[str]:
    """Every IANA time zone name this machine knows, sorted (for the form's suggestions)."""
    return sorted(name for name in available_timezones() if not name.startswith(("posix/", "right/")))


def _instant(wall: datetime, tz: ZoneInfo) -> int | None:
    """The epoch ms of the naive wall time ``wall`` in ``tz``; None if that wall time does not exist.

    fold=0 picks the first of two occurrences (the DST rule "a repeated time runs once").
    A wall time inside a spring-forward gap does not survive the round trip through UTC.
    """
    local = wall.replace(tzinfo=tz, fold=0)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != wall:
        return None
    return slots.to_ms(utc)


def _wall(epoch_ms: int, tz: ZoneInfo, *, first_occurrence: bool = False) -> datetime:
    """The naive wall time of an instant in ``tz``.

    With ``first_occurrence``, an instant in the second pass of a repeated hour gives the
    wall time whose *first* occurrence is that instant's offset later (so iterating
    backwards from it finds every first occurrence at or before the instant).
    """
    moment = slots.to_datetime(epoch_ms)
    local = moment.astimezone(tz)
    if first_occurrence and local.fold == 1:
        shift = local.replace(fold=0).utcoffset() - local.utcoffset()  # type: ignore[operator]
        return (moment + shift).astimezone(tz).replace(tzinfo=None, fold=0)
    return local.replace(tzinfo=None, fold=0)


# --- one job's slots -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """Everything slot math needs about one job (built from the Job row by the callers)."""

    job_id: int
    schedule: Schedule
    #: the plugin's interval (seconds): used when the schedule is empty
    plugin_interval: int
    timezone: str = "UTC"
    jitter_seconds: int = 0

    @classmethod
    def of(
        cls, job_id: int, schedule: str, plugin_interval: int, timezone: str = "UTC", jitter_seconds: int = 0
    ) -> Timing:
        """Build from stored values; a stored schedule that no longer parses raises ScheduleError."""
        return cls(job_id, parse(schedule), plugin_interval, timezone or "UTC", jitter_seconds or 0)

    @property
    def interval_seconds(self) -> int:
        """Seconds between slots for interval kinds (0 for cron)."""
        if self.schedule.kind == "plugin":
            return self.plugin_interval
        return self.schedule.seconds


def _memo() -> dict[tuple[str, str, int, bool], int | None]:
    cache: dict[tuple[str, str, int, bool], int | None] | None = getattr(_local, "memo", None)
    if cache is None or len(cache) > 50_000:
        cache = _local.memo = {}
    return cache


def _nominal_after(timing: Timing, after_ms: int) -> int:
    """The first un-jittered slot strictly after ``after_ms``."""
    if timing.schedule.kind != "cron":
        return slots.slot_after(after_ms, timing.job_id, timing.interval_seconds)
    # Cron slots do not depend on the job: the many jobs of one expression and zone that come
    # due together ask the same question, and croniter's answer costs ~20-30 us. Cron slots are
    # whole seconds, so "after t" is "after t's whole second": one question per second, however
    # late (a scheduler that fell behind asks with every tick's own now).
    after_ms -= after_ms % 1000
    memo = _memo()
    key = (timing.schedule.cron, timing.timezone, after_ms, True)
    found = memo.get(key)
    if found is None:
        found = memo[key] = _cron_after(timing, after_ms)
    return found


def _cron_after(timing: Timing, after_ms: int) -> int:
    tz = zone(timing.timezone)
    itr = _iterator(timing.schedule.cron, _wall(after_ms, tz))
    for _ in range(_MAX_CANDIDATES):
        try:
            wall = itr.get_next(datetime)
        except CroniterBadDateError as exc:
            raise ScheduleError(f"“{timing.schedule.text}” never runs.") from exc
        instant = _instant(wall, tz)
        if instant is not None and instant > after_ms:
            return instant
    raise ScheduleError(f"“{timing.schedule.text}” never runs.")


def _nominal_at_or_before(timing: Timing, at_ms: int) -> int | None:
    """The last un-jittered slot at or before ``at_ms`` (None: none in the last years)."""
    if timing.schedule.kind != "cron":
        return slots.slot_at_or_before(at_ms, timing.job_id, timing.interval_seconds)
    at_ms -= at_ms % 1000  # slots are whole seconds (see _nominal_after)
    memo = _memo()
    key = (timing.schedule.cron, timing.timezone, at_ms, False)
    if key not in memo:
        memo[key] = _cron_at_or_before(timing, at_ms)
    return memo[key]


def _cron_at_or_before(timing: Timing, at_ms: int) -> int | None:
    tz = zone(timing.timezone)
    # get_prev is strictly before its start: start a hair after the wall time to include it.
    start = _wall(at_ms, tz, first_occurrence=True) + timedelta(microseconds=1)
    itr = _iterator(timing.schedule.cron, start)
    for _ in range(_MAX_CANDIDATES):
        try:
            wall = itr.get_prev(datetime)
        except CroniterBadDateError:
            return None
        instant = _instant(wall, tz)
        if instant is not None and instant <= at_ms:
            return instant
    return None


def jitter_ms(job_id: int, nominal_ms: int, jitter_seconds: int) -> int:
    """The delay of one (job, slot), 0 <= d < jitter_seconds s: a hash, so every node agrees.

    (Python's ``hash()`` is salted per process; blake2b is not.)
    """
    if jitter_seconds <= 0:
        return 0
    digest = hashlib.blake2b(f"{job_id}:{nominal_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (jitter_seconds * 1000)


def _jittered(timing: Timing, nominal_ms: int) -> int:
    return nominal_ms + jitter_ms(timing.job_id, nominal_ms, timing.jitter_seconds)


def next_slot(timing: Timing, after_ms: int) -> int:
    """The job's first slot (jitter included) strictly after ``after_ms``."""
    if timing.jitter_seconds <= 0:
        return _nominal_after(timing, after_ms)
    # The latest nominal slot may still be ahead once jittered (jitter < the gap between slots,
    # so only that one and the next can be the answer).
    latest = _nominal_at_or_before(timing, after_ms)
    if latest is not None and _jittered(timing, latest) > after_ms:
        return _jittered(timing, latest)
    return _jittered(timing, _nominal_after(timing, after_ms))


def slot_at_or_before(timing: Timing, at_ms: int) -> int | None:
    """The job's last slot (jitter included) at or before ``at_ms``; None if it has none."""
    latest = _nominal_at_or_before(timing, at_ms)
    if latest is None or timing.jitter_seconds <= 0:
        return latest
    if _jittered(timing, latest) <= at_ms:
        return _jittered(timing, latest)
    earlier = _nominal_at_or_before(timing, latest - 1)
    return None if earlier is None else _jittered(timing, earlier)


def next_slots(timing: Timing, after_ms: int, count: int) -> list[int]:
    """The next ``count`` slots strictly after ``after_ms``."""
    out: list[int] = []
    at = after_ms
    for _ in range(count):
        at = next_slot(timing, at)
        out.append(at)
    return out


# --- operators' minimum ----------------------------------------------------------------------


def min_gap_seconds(schedule: Schedule, plugin_interval: int) -> float:
    """The smallest gap between two slots of ``schedule``, in seconds of wall-clock time.

    Intervals: the interval. Cron: found from croniter's expanded fields, the smallest gap
    within a day (the sorted times of day) against the smallest gap across days (the
    closest two matching days, from the day fields alone). A DST jump can bring two wall
    times closer once a year, by at most the jump; that is not counted.
    """
    if schedule.kind == "plugin":
        return float(plugin_interval)
    if schedule.kind == "interval":
        return float(schedule.seconds)
    expanded = _compiled(schedule.cron).expanded
    minutes, hours = _values(expanded[0], 60), _values(expanded[1], 24)
    seconds = _values(expanded[5], 60) if schedule.has_seconds else [0]
    times = sorted(h * 3600 + m * 60 + s for h in hours for m in minutes for s in seconds)
    within = min((b - a for a, b in pairwise(times)), default=None)
    span = times[-1] - times[0]
    if within is not None and within <= 86400 - span:
        return float(within)  # a gap across days is at least 86400 - span
    day_gap = _min_day_gap(schedule.cron)
    across = day_gap * 86400 - span
    return float(across if within is None else min(within, across))


def _values(field: list[int | str], size: int) -> list[int]:
    if field == ["*"]:
        return list(range(size))
    return sorted({int(v) for v in field if isinstance(v, int) or str(v).isdigit()})


@lru_cache(maxsize=1024)
def _min_day_gap(expression: str) -> int:
    """Smallest number of days between two matching days of ``expression``'s day fields."""
    fields = expression.split()
    day_fields = fields[-3:] if len(fields) == 5 else fields[3:6]
    itr = croniter(
        "0 0 " + " ".join(day_fields), datetime(2001, 1, 1), max_years_between_matches=MAX_YEARS_WITHOUT_SLOT
    )
    days: list[datetime] = []
    try:
        # 2,000 matching days cover more than five years of a daily schedule and every
        # leap-day or fifth-weekday pattern's shortest gap.
        for _ in range(2000):
            days.append(itr.get_next(datetime))
            if len(days) >= 2 and (days[-1] - days[-2]).days == 1:
                return 1
            if len(days) > 1 and days[-1].year > 2001 + 2 * MAX_YEARS_WITHOUT_SLOT:
                break
    except CroniterBadDateError:
        pass
    gaps = [(b - a).days for a, b in pairwise(days)]
    return min(gaps, default=366 * MAX_YEARS_WITHOUT_SLOT)


# --- retries ---------------------------------------------------------------------------------


def retry_delay_seconds(failed_attempt: int, base_seconds: int, cap_seconds: int) -> int:
    """Delay before the retry that follows attempt ``failed_attempt`` (1 = the first run).

    Exponential backoff: base, 2 * base, 4 * base, ... never more than the cap.
    """
    if failed_attempt < 1:
        raise ValueError("attempts count from 1")
    # 2 ** 62 would be exact but pointless; anything past the cap is the cap.
    exponent = min(failed_attempt - 1, 40)
    return max(0, min(cap_seconds, base_seconds * 2**exponent))


#: The run endings that are retried (a cancelled run never is: someone wanted it stopped).
RETRIED_ENDINGS = frozenset({"failed", "timed_out"})


def retry_after(status: str, attempt: int, max_retries: int, base_seconds: int, cap_seconds: int) -> int | None:
    """Seconds until the retry of a run that ended with ``status`` on ``attempt``; None: no retry.

    Failures and timeouts are retried while ``attempt <= max_retries`` (attempt 1 is the first
    run, so ``max_retries=2`` gives three attempts); cancelled, lost and succeeded runs are not.
    """
    if status not in RETRIED_ENDINGS or attempt > max_retries:
        return None
    return retry_delay_seconds(attempt, base_seconds, cap_seconds)


def retry_due_ms(failed_at_ms: int, failed_attempt: int, base_seconds: int, cap_seconds: int) -> int:
    """When the retry after ``failed_attempt`` is due (epoch ms)."""
    return failed_at_ms + retry_delay_seconds(failed_attempt, base_seconds, cap_seconds) * 1000


# --- words -------------------------------------------------------------------------------------

_DAY_ABBR = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_MONTH_NAMES = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def seconds_in_words(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            word = _UNIT_WORDS[unit]
            return f"{count} {word}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def describe(schedule: Schedule, timezone: str = "UTC", plugin_interval: int = 0) -> str:
    """The schedule in words, e.g. "every weekday at 08:00 (Europe/Paris)"."""
    if schedule.kind == "plugin":
        return f"every {seconds_in_words(plugin_interval)} (the plugin's interval)"
    if schedule.kind == "interval":
        return f"every {seconds_in_words(schedule.seconds)}"
    return f"{_describe_cron(schedule)} ({timezone})"


def _describe_cron(schedule: Schedule) -> str:
    fields = schedule.cron.split()
    second = fields[0] if schedule.has_seconds else "0"
    minute, hour, dom, month, dow = fields[-5:]
    times = _describe_times(second, minute, hour, schedule.has_seconds)
    days = _describe_days(dom, month, dow)
    if times.startswith("every"):  # "every 5 minutes" / "every 5 minutes, every weekday"
        return times if days == "every day" else f"{times}, {days}"
    return f"{days} {times}"


def _plain(field: str) -> bool:
    return bool(re.fullmatch(r"\d+", field))


def _step(field: str) -> int | None:
    match = re.fullmatch(r"(?:\*|0)/(\d+)", field)
    return int(match.group(1)) if match else None


def _describe_times(second: str, minute: str, hour: str, has_seconds: bool) -> str:
    if _plain(second) and _plain(minute) and _plain(hour):
        clock = f"{int(hour):02d}:{int(minute):02d}" + (f":{int(second):02d}" if has_seconds and second != "0" else "")
        return f"at {clock}"
    if _plain(second) and _plain(minute) and re.fullmatch(r"\d+(,\d+)+", hour):
        clocks = [f"{int(h):02d}:{int(minute):02d}" for h in hour.split(",")]
        return "at " + ", ".join(clocks[:-1]) + " and " + clocks[-1]
    if has_seconds and minute == "*" and hour == "*":
        step = _step(second)
        if second == "*":
            return "every second"
        if step:
            return f"every {seconds_in_words(step)}"
        return f"at second {second} of every minute"
    if _plain(second) and hour == "*":
        step = _step(minute)
        if minute == "*":
            return "every minute"
        if step:
            return f"every {seconds_in_words(step * 60)}"
        if _plain(minute):
            return f"every hour at minute {int(minute)}"
        return f"at minutes {minute} of every hour"
    if _plain(second) and _plain(minute) and _step(hour):
        return f"every {seconds_in_words(int(_step(hour) or 1) * 3600)} at minute {int(minute)}"
    parts = []
    if has_seconds:
        parts.append(f"second {second}")
    parts.append(f"minute {minute}")
    parts.append(f"hour {hour}")
    return "at " + ", ".join(parts)


def _describe_days(dom: str, month: str, dow: str) -> str:
    dow_l = dow.lower()
    if dom == "*" and dow == "*":
        text = "every day"
    elif dom == "*" and dow_l in ("1-5", "mon-fri"):
        text = "every weekday"
    elif dom == "*" and dow_l in ("0,6", "6,0", "sat,sun", "sun,sat", "6-7", "6,7"):
        text = "on weekends"
    elif dom == "*" and re.fullmatch(r"[0-7]", dow):
        text = f"every {_DAY_NAMES[int(dow) % 7]}"
    elif dom == "*" and dow_l[:3] in _DAY_ABBR and len(dow_l) == 3:
        text = f"every {_DAY_NAMES[_DAY_ABBR.index(dow_l)]}"
    elif dom == "*":
        text = f"on weekdays {dow}"
    elif dow == "*" and _plain(dom):
        text = f"on day {int(dom)} of the month"
    elif dow == "*" and dom.upper() == "L":
        text = "on the last day of the month"
    elif dow == "*":
        text = f"on days {dom} of the month"
    else:
        text = f"on days {dom} of the month or weekdays {dow}"
    if month != "*":
        if _plain(month) and 1 <= int(month) <= 12:
            text += f" in {_MONTH_NAMES[int(month) - 1]}"
        else:
            text += f" in months {month}"
    return text
