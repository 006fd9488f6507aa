"""The pure schedule (scheduler_app.schedules): slots of intervals and cron in time zones.

No database and no clock: every function is given the time ("now" is an argument), so
these tests are a fake clock. Times are written as local wall times with their offset and
checked as instants.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_app import schedules, slots
from scheduler_app.schedules import ScheduleError, Timing

PARIS = "Europe/Paris"


def ms(text: str) -> int:
    """Epoch ms of an ISO time with an offset, e.g. '2026-03-29T01:30+01:00'."""
    return slots.to_ms(datetime.fromisoformat(text))


def iso(epoch_ms: int, zone: str = "UTC") -> str:
    return slots.to_datetime(epoch_ms).astimezone(schedules.zone(zone)).isoformat()


def timing(text: str, zone: str = "UTC", *, job_id: int = 7, plugin_interval: int = 10, jitter: int = 0) -> Timing:
    return Timing.of(job_id, text, plugin_interval, zone, jitter)


def upcoming(text: str, after: str, count: int, zone: str = "UTC", **kw: int) -> list[str]:
    return [iso(s, zone) for s in schedules.next_slots(timing(text, zone, **kw), ms(after), count)]


# --- empty schedule and intervals --------------------------------------------------------------


@pytest.mark.parametrize("job_id", [1, 2, 77, 123456])
@pytest.mark.parametrize("interval", [1, 5, 10, 3600])
def test_an_empty_schedule_keeps_todays_slots(job_id: int, interval: int) -> None:
    spec = timing("", job_id=job_id, plugin_interval=interval)
    for now in (ms("2026-11-27T21:00:00.123+00:00"), ms("2031-02-03T04:05:06.789+00:00")):
        assert schedules.next_slot(spec, now) == slots.slot_after(now, job_id, interval)
        assert schedules.slot_at_or_before(spec, now) == slots.slot_at_or_before(now, job_id, interval)


def test_intervals_are_anchored_like_todays_slots_with_a_per_job_offset() -> None:
    five_minutes = timing("every 5m", job_id=3)
    now = ms("2026-11-27T21:00:00+00:00")
    got = schedules.next_slots(five_minutes, now, 4)
    assert got[0] == slots.slot_after(now, 3, 300)
    assert [b - a for a, b in pairwise(got)] == [300_000] * 3
    # another job of the same interval gets other slots (spread over the interval)
    assert schedules.next_slot(timing("every 5m", job_id=4), now) != got[0]


@pytest.mark.parametrize(
    ("text", "seconds"), [("every 30s", 30), ("every 5m", 300), ("every 2h", 7200), ("every 1d", 86400)]
)
def test_interval_units(text: str, seconds: int) -> None:
    parsed = schedules.parse(text)
    assert (parsed.kind, parsed.seconds, parsed.text) == ("interval", seconds, text)
    assert schedules.min_gap_seconds(parsed, 10) == seconds


def test_an_interval_is_elapsed_time_whatever_the_time_zone() -> None:
    # Across the spring-forward night an interval keeps its exact spacing.
    got = schedules.next_slots(timing("every 1h", PARIS), ms("2026-03-29T00:30+01:00"), 4)
    assert {b - a for a, b in pairwise(got)} == {3_600_000}
    assert schedules.next_slots(timing("every 1h", PARIS), 0, 3) == schedules.next_slots(timing("every 1h"), 0, 3)


# --- cron --------------------------------------------------------------------------------------


def test_five_field_cron_every_weekday_at_eight() -> None:
    # Friday evening: the next three are Monday, Tuesday, Wednesday at 08:00.
    assert upcoming("0 8 * * 1-5", "2026-11-27T21:00+00:00", 3) == [
        "2026-11-30T08:00:00+00:00",
        "2026-12-01T08:00:00+00:00",
        "2026-12-02T08:00:00+00:00",
    ]


def test_weekday_numbers_are_crons_zero_and_seven_are_sunday() -> None:
    assert upcoming("0 9 * * 0", "2026-11-27T00:00+00:00", 1) == ["2026-11-29T09:00:00+00:00"]  # a Sunday
    assert upcoming("0 9 * * 7", "2026-11-27T00:00+00:00", 1) == ["2026-11-29T09:00:00+00:00"]


def test_both_day_fields_restricted_match_either_like_cron() -> None:
    # "the 1st, or any Monday" (vixie cron's OR), not "the 1st if it is a Monday".
    assert upcoming("0 0 1 * 1", "2026-11-27T12:00+00:00", 3) == [
        "2026-11-30T00:00:00+00:00",  # Monday
        "2026-12-01T00:00:00+00:00",  # the 1st
        "2026-12-07T00:00:00+00:00",  # Monday
    ]


def test_six_field_cron_has_a_leading_seconds_field() -> None:
    got = upcoming("*/2 * * * * *", "2026-11-27T21:00:00.500+00:00", 3)
    assert got == ["2026-11-27T21:00:02+00:00", "2026-11-27T21:00:04+00:00", "2026-11-27T21:00:06+00:00"]
    # strictly after: from an even second the next one is two seconds on
    assert upcoming("*/2 * * * * *", "2026-11-27T21:00:02+00:00", 1) == ["2026-11-27T21:00:04+00:00"]
    assert upcoming("15 30 8 * * *", "2026-11-27T21:00+00:00", 1) == ["2026-11-28T08:30:15+00:00"]


def test_slot_at_or_before_includes_the_instant_itself() -> None:
    spec = timing("*/2 * * * * *")
    assert schedules.slot_at_or_before(spec, ms("2026-11-27T21:00:02+00:00")) == ms("2026-11-27T21:00:02+00:00")
    assert schedules.slot_at_or_before(spec, ms("2026-11-27T21:00:03.999+00:00")) == ms("2026-11-27T21:00:02+00:00")


def test_aliases() -> None:
    assert schedules.parse("@daily").cron == "0 0 * * *"
    assert schedules.parse("@daily").text == "@daily"
    assert upcoming("@hourly", "2026-11-27T21:10+00:00", 1) == ["2026-11-27T22:00:00+00:00"]


# --- time zones and daylight saving -------------------------------------------------------------


def test_cron_runs_on_the_wall_clock_of_the_jobs_time_zone() -> None:
    # 08:00 in New York is 13:00 UTC in winter and 12:00 UTC in summer.
    assert upcoming("0 8 * * *", "2026-01-10T00:00+00:00", 1, "America/New_York") == ["2026-01-10T08:00:00-05:00"]
    assert upcoming("0 8 * * *", "2026-07-10T00:00+00:00", 1, "America/New_York") == ["2026-07-10T08:00:00-04:00"]
    got = schedules.next_slot(timing("0 8 * * *", "America/New_York"), ms("2026-07-10T00:00+00:00"))
    assert iso(got) == "2026-07-10T12:00:00+00:00"


def test_spring_forward_a_wall_time_that_does_not_exist_is_skipped() -> None:
    # Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    assert upcoming("30 2 * * *", "2026-03-28T12:00+01:00", 2, PARIS) == [
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # Every half hour: 01:30 CET is followed by 03:00 CEST, thirty real minutes later.
    got = schedules.next_slots(timing("*/30 * * * *", PARIS), ms("2026-03-29T01:00+01:00"), 3)
    assert [iso(s, PARIS) for s in got] == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    assert got[1] - got[0] == 30 * 60_000


def test_fall_back_a_repeated_wall_time_runs_once_at_its_first_occurrence() -> None:
    # Paris, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    assert upcoming("30 2 * * *", "2026-10-24T12:00+02:00", 2, PARIS) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    # Every half hour: no second pass through 02:00-02:59.
    assert upcoming("*/30 * * * *", "2026-10-25T01:45+02:00", 4, PARIS) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    # Asked during the second pass, the latest slot is the first occurrence of 02:30.
    spec = timing("*/30 * * * *", PARIS)
    second_pass = ms("2026-10-25T02:40+01:00")
    assert iso(schedules.slot_at_or_before(spec, second_pass) or 0, PARIS) == "2026-10-25T02:30:00+02:00"
    assert iso(schedules.next_slot(spec, second_pass), PARIS) == "2026-10-25T03:00:00+01:00"


def test_a_half_hour_daylight_saving_shift_follows_the_same_rules() -> None:
    # Lord Howe Island moves its clocks by 30 minutes: 02:00 -> 02:30 on 2026-10-04.
    zone = "Australia/Lord_Howe"
    assert upcoming("15 2 * * *", "2026-10-03T12:00+10:30", 2, zone) == [
        "2026-10-05T02:15:00+11:00",
        "2026-10-06T02:15:00+11:00",
    ]


# A window of times around both Paris transitions of 2026, plus ordinary days.
_instants = st.one_of(
    st.integers(ms("2026-03-28T00:00+00:00"), ms("2026-03-30T00:00+00:00")),
    st.integers(ms("2026-10-24T00:00+00:00"), ms("2026-10-26T00:00+00:00")),
    st.integers(ms("2026-01-01T00:00+00:00"), ms("2027-01-01T00:00+00:00")),
)


@settings(max_examples=300, deadline=None)
@given(
    now=_instants,
    text=st.sampled_from(["*/30 * * * *", "30 2 * * *", "0 8 * * 1-5", "*/7 * * * * *", "every 5m", "", "0 */2 * * *"]),
    zone=st.sampled_from([PARIS, "America/New_York", "UTC", "Australia/Lord_Howe"]),
    jitter=st.sampled_from([0, 1]),
)
def test_slots_bracket_every_instant(now: int, text: str, zone: str, jitter: int) -> None:
    """For any t: latest slot <= t < next slot, and nothing lies between them."""
    spec = timing(text, zone, jitter=jitter)
    before = schedules.slot_at_or_before(spec, now)
    after = schedules.next_slot(spec, now)
    assert before is not None and before <= now < after
    assert schedules.next_slot(spec, before) == after


# --- jitter --------------------------------------------------------------------------------------


def test_jitter_is_below_its_bound_and_keeps_slots_in_order() -> None:
    spec = timing("*/10 * * * * *", jitter=5)
    start = ms("2026-11-27T20:59:59.999+00:00")  # a slot's jitter is < 5 s: the lists pair up
    plain = schedules.next_slots(timing("*/10 * * * * *"), start, 50)
    jittered = schedules.next_slots(spec, start, 50)
    delays = [j - p for p, j in zip(plain, jittered, strict=True)]
    assert all(0 <= d < 5000 for d in delays)
    assert len(set(delays)) > 10  # spread, not one constant
    assert jittered == sorted(jittered)


def test_jitter_is_the_same_in_another_process() -> None:
    """Every node must compute the same jittered slot (no per-process hash salt)."""
    args = [(job, nominal, 30) for job in (1, 2, 99) for nominal in (0, 1_700_000_000_000, 1_800_000_000_123)]
    here = [schedules.jitter_ms(*a) for a in args]
    code = (
        "import json, sys; from scheduler_app import schedules; "
        "print(json.dumps([schedules.jitter_ms(*a) for a in json.loads(sys.argv[1])]))"
    )
    for seed in ("0", "12345"):  # different hash seeds, as two nodes would have
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(args)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        )
        assert json.loads(out.stdout) == here
    slot_code = (
        "import sys; from scheduler_app import schedules; "
        "t = schedules.Timing.of(5, '0 8 * * 1-5', 10, 'Europe/Paris', 600); "
        "print(schedules.next_slots(t, 1_790_000_000_000, 5))"
    )
    out = subprocess.run([sys.executable, "-c", slot_code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(schedules.next_slots(timing("0 8 * * 1-5", PARIS, job_id=5, jitter=600),
                                                          1_790_000_000_000, 5))  # fmt: skip


# --- min interval, retries, words, errors -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gap"),
    [
        ("", 10),
        ("*/2 * * * * *", 2),
        ("0,30 * * * * *", 30),
        ("* * * * *", 60),
        ("*/15 * * * *", 900),
        ("0 8 * * 1-5", 86400),
        ("0 9,17 * * *", 8 * 3600),
        ("0 23 * * *", 86400),
        ("30 23,1 * * *", 2 * 3600),  # 23:30 -> 01:30 across midnight
        ("0 0 * * 1", 7 * 86400),
        ("0 0 1 * *", 28 * 86400),
    ],
)
def test_smallest_gap_between_slots(text: str, gap: int) -> None:
    assert schedules.min_gap_seconds(schedules.parse(text), 10) == gap


def test_retry_delays_double_and_stop_at_the_cap() -> None:
    assert [schedules.retry_delay_seconds(k, 10, 60) for k in range(1, 6)] == [10, 20, 40, 60, 60]
    assert schedules.retry_due_ms(1000, 2, 10, 600) == 21_000
    assert schedules.retry_delay_seconds(500, 10, 3600) == 3600
    with pytest.raises(ValueError):
        schedules.retry_delay_seconds(0, 10, 60)


@pytest.mark.parametrize(
    ("status", "attempt", "expected"),
    [
        ("failed", 1, 10),
        ("timed_out", 2, 20),  # timeouts retry like failures, the delay doubled for attempt 2
        ("failed", 3, None),  # max_retries=2: three attempts, then no more
        ("cancelled", 1, None),  # someone wanted it stopped
        ("lost", 1, None),
        ("succeeded", 1, None),
    ],
)
def test_which_endings_are_retried(status: str, attempt: int, expected: int | None) -> None:
    assert schedules.retry_after(status, attempt, max_retries=2, base_seconds=10, cap_seconds=600) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0 8 * * 1-5", "every weekday at 08:00 (Europe/Paris)"),
        ("*/2 * * * * *", "every 2 seconds (Europe/Paris)"),
        ("*/5 * * * *", "every 5 minutes (Europe/Paris)"),
        ("30 7 * * sat,sun", "on weekends at 07:30 (Europe/Paris)"),
        ("0 9,17 * * 1-5", "every weekday at 09:00 and 17:00 (Europe/Paris)"),
        ("0 6 * * 1", "every Monday at 06:00 (Europe/Paris)"),
        ("0 0 1 * *", "on day 1 of the month at 00:00 (Europe/Paris)"),
        ("@daily", "every day at 00:00 (Europe/Paris)"),
        ("every 90s", "every 90 seconds"),
        ("every 2h", "every 2 hours"),
        ("", "every 10 seconds (the plugin's interval)"),
    ],
)
def test_described_in_words(text: str, words: str) -> None:
    assert schedules.describe(schedules.parse(text), PARIS, 10) == words


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("every 0s", "at least 1 second"),
        ("every 5 weeks", "is not an interval"),
        ("61 * * * *", "out of range"),
        ("* * *", "has 3 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("@fortnightly", "is not known"),
        ("0 0 30 2 *", "never runs"),
        ("0 8 * * funday", "not a valid cron expression"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        schedules.parse(text)


def test_bad_time_zone() -> None:
    with pytest.raises(ScheduleError, match="not a time zone"):
        schedules.zone("Mars/Olympus_Mons")
    with pytest.raises(ScheduleError, match="Choose a time zone"):
        schedules.zone("")
    assert "Europe/Paris" in schedules.zone_names()


def test_whitespace_is_normalised() -> None:
    assert schedules.parse("  0  8 * *   1-5 ").text == "0 8 * * 1-5"
    assert schedules.parse("EVERY 5M").text == "every 5m"


def test_a_long_run_of_slots_is_strictly_increasing_through_a_whole_year() -> None:
    spec = timing("0 */3 * * *", PARIS)
    got = schedules.next_slots(spec, ms("2026-01-01T00:00+01:00"), 8 * 366)
    assert all(b > a for a, b in pairwise(got))
    assert datetime.fromtimestamp(got[-1] / 1000, UTC) - datetime(2026, 1, 1, tzinfo=UTC) > timedelta(days=360)
