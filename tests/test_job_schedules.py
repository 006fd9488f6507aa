"""Job schedules through every path: the service rules, the users' form and its live preview,
the admin, fixtures. The slot math itself is tested in test_schedules.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from scheduler_app import schedules, selectors, services, slots
from scheduler_app.models import Job, Plugin, UserProfile
from scheduler_app.services import JobSchedule, ScheduleValidationError

pytestmark = pytest.mark.django_db

PREVIEW = "/schedules/preview/"


@pytest.fixture
def operator(client, staff):
    client.force_login(staff)
    return client


# --- the rules (services.validate_schedule) ---------------------------------------------------


def test_a_schedule_is_normalised_and_gets_the_owners_time_zone(alice, sample_plugin):
    UserProfile.objects.create(user=alice, timezone="Europe/Paris")
    job = services.create_job(alice, sample_plugin, {}, schedule=JobSchedule(schedule="  0 8  * * 1-5"))
    job.refresh_from_db()
    assert (job.schedule, job.timezone) == ("0 8 * * 1-5", "Europe/Paris")


@override_settings(TIME_ZONE="America/New_York")
def test_without_a_profile_the_time_zone_is_the_servers(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {}, schedule=JobSchedule(schedule="every 5m"))
    assert job.timezone == "America/New_York"


def test_an_empty_schedule_is_the_plugins_interval(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {})
    assert job.schedule == "" and job.max_retries == 0
    assert selectors.job_timing(job, sample_plugin) == schedules.Timing.of(job.pk, "", 10, job.timezone)


def test_the_plugins_minimum_interval_is_a_field_error_naming_it(alice, sample_plugin):
    sample_plugin.min_interval = 60
    sample_plugin.save()
    with pytest.raises(ScheduleValidationError) as caught:
        services.validate_schedule(sample_plugin, JobSchedule(schedule="*/2 * * * * *"))
    message = caught.value.errors["schedule"]
    assert "every 2 seconds" in message and "Sample" in message and "every 1 minute" in message
    assert "minimum interval" in message
    # at the limit is allowed, and so is the plugin's own interval (the operators chose it)
    services.validate_schedule(sample_plugin, JobSchedule(schedule="every 1m"))
    services.validate_schedule(sample_plugin, JobSchedule(schedule=""))


@pytest.mark.parametrize(
    ("wanted", "field", "words"),
    [
        (JobSchedule(schedule="0 25 * * *"), "schedule", "out of range"),
        (JobSchedule(timezone="Mars/Base"), "timezone", "not a time zone"),
        (JobSchedule(schedule="*/5 * * * * *", jitter_seconds=5), "jitter_seconds", "shorter than"),
        (JobSchedule(max_retries=11), "max_retries", "0 to 10"),
        (JobSchedule(retry_delay_seconds=0), "retry_delay_seconds", "from 1"),
        (JobSchedule(retry_delay_seconds=60, retry_max_delay_seconds=30), "retry_max_delay_seconds", "shorter"),
    ],
)
def test_each_rule_reports_on_its_field(sample_plugin, wanted, field, words):
    with pytest.raises(ScheduleValidationError) as caught:
        services.validate_schedule(sample_plugin, wanted)
    assert words in caught.value.errors[field]


def test_an_invalid_schedule_saves_nothing(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {}, schedule=JobSchedule(schedule="every 1h"))
    with pytest.raises(ScheduleValidationError):
        services.update_job(job, description="changed", schedule=JobSchedule(schedule="every fortnight"))
    job.refresh_from_db()
    assert (job.schedule, job.description) == ("every 1h", "")
    with pytest.raises(ScheduleValidationError):
        services.create_job(alice, sample_plugin, {}, schedule=JobSchedule(schedule="bad"))
    assert Job.objects.count() == 1


def test_clone_keeps_the_schedule(alice, sample_plugin):
    job = services.create_job(
        alice, sample_plugin, {}, schedule=JobSchedule(schedule="0 8 * * 1-5", timezone="Asia/Tokyo", max_retries=2)
    )
    copy = services.clone_job(job)
    assert JobSchedule.of(copy) == JobSchedule.of(job)


def test_the_next_run_shown_follows_the_schedule_in_the_jobs_time_zone(alice, sample_plugin):
    job = services.create_job(
        alice,
        sample_plugin,
        {},
        activate=True,
        schedule=JobSchedule(schedule="0 8 * * 1-5", timezone="Europe/Paris"),
    )
    friday_evening = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)
    nxt = selectors.next_run_at(job, sample_plugin, friday_evening)
    assert nxt is not None and nxt.isoformat() == "2026-11-30T08:00:00+01:00"


# --- the preview endpoint ---------------------------------------------------------------------


def test_the_preview_describes_the_schedule_and_lists_five_runs_in_its_time_zone(alice_client, sample_plugin):
    response = alice_client.get(
        PREVIEW, {"plugin": sample_plugin.pk, "schedule": "0 8 * * 1-5", "timezone": "Europe/Paris"}
    )
    assert response.status_code == 200
    data = response.json()
    assert data["description"] == "every weekday at 08:00 (Europe/Paris)"
    assert len(data["next_runs"]) == 5
    first = datetime.fromisoformat(data["next_runs"][0]["iso"])
    assert (first.hour, first.minute, first.utcoffset().total_seconds() in (3600, 7200)) == (8, 0, True)
    assert first.weekday() < 5 and first > datetime.now(UTC)
    assert data["next_runs"][0]["display"].endswith(("CET", "CEST"))


def test_the_preview_of_a_saved_job_matches_its_slots(alice_client, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {}, schedule=JobSchedule(schedule="every 5m"))
    data = alice_client.get(PREVIEW, {"plugin": sample_plugin.pk, "job": job.pk, "schedule": "every 5m"}).json()
    assert data["approximate"] is False
    first = datetime.fromisoformat(data["next_runs"][0]["iso"])
    timing = schedules.Timing.of(job.pk, "every 5m", 10)
    assert slots.to_ms(first) == schedules.next_slot(timing, slots.to_ms(first) - 1)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"schedule": "0 8 * * funday"}, "schedule"),
        ({"schedule": "* * *"}, "schedule"),
        ({"schedule": "every", "timezone": "Nowhere/Land"}, "timezone"),
        ({"schedule": "every 5m", "jitter_seconds": "abc"}, "jitter_seconds"),
        ({"schedule": "every 5m", "jitter_seconds": "-3"}, "jitter_seconds"),
        ({"schedule": "\x00\ufffd" * 300}, "schedule"),
        ({"schedule": "0 0 31 2 *"}, "schedule"),
        ({"schedule": "1-2-3 * * * *"}, "schedule"),
    ],
)
def test_bad_input_is_a_400_with_a_field_error_never_a_500(alice_client, sample_plugin, params, field):
    response = alice_client.get(PREVIEW, {"plugin": sample_plugin.pk, **params})
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_the_preview_refuses_unknown_plugins_and_other_peoples_jobs(alice_client, bob, sample_plugin):
    assert alice_client.get(PREVIEW, {"plugin": "x"}).status_code == 400
    assert alice_client.get(PREVIEW, {"plugin": 999}).status_code == 400
    bobs = services.create_job(bob, sample_plugin, {})
    assert alice_client.get(PREVIEW, {"plugin": sample_plugin.pk, "job": bobs.pk}).status_code == 400


def test_the_preview_needs_a_login(client, sample_plugin):
    response = client.get(PREVIEW, {"plugin": sample_plugin.pk})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- the users' form ---------------------------------------------------------------------------


def test_the_form_shows_the_schedule_with_words_and_next_runs(alice_client, alice, sample_plugin):
    job = services.create_job(
        alice, sample_plugin, {}, schedule=JobSchedule(schedule="30 7 * * sat,sun", timezone="Asia/Tokyo")
    )
    page = alice_client.get(reverse("plugin", args=[sample_plugin.pk])).text
    assert f'name="job-{job.pk}-schedule"' in page and 'value="30 7 * * sat,sun"' in page
    assert "on weekends at 07:30 (Asia/Tokyo)" in page
    assert page.count("JST</time>") == 5
    assert '<datalist id="tz-names">' in page and '<option value="Europe/Paris">' in page


def test_saving_an_invalid_schedule_is_a_field_error_and_saves_nothing(alice_client, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "A"}, description="keep")
    url = reverse("job_save", args=[job.pk])
    response = alice_client.post(
        url,
        {
            f"job-{job.pk}-description": "changed",
            f"job-{job.pk}-config": json.dumps({"name": "B"}),
            f"job-{job.pk}-schedule": "0 8 * * funday",
            f"job-{job.pk}-timezone": "Europe/Paris",
        },
    )
    assert response.status_code == 400
    assert 'data-error-for="schedule"' in response.text and "not a valid cron expression" in response.text
    job.refresh_from_db()
    assert (job.description, job.schedule, job.config["name"]) == ("keep", "", "A")


def test_saving_a_schedule_through_the_form(alice_client, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "A"})
    prefix = f"job-{job.pk}"
    response = alice_client.post(
        reverse("job_save", args=[job.pk]),
        {
            f"{prefix}-description": "",
            f"{prefix}-config": json.dumps({"name": "A"}),
            f"{prefix}-schedule": "*/30 * * * *",
            f"{prefix}-timezone": "America/New_York",
            f"{prefix}-jitter_seconds": "5",
            f"{prefix}-max_retries": "2",
            f"{prefix}-retry_delay_seconds": "15",
            f"{prefix}-retry_max_delay_seconds": "120",
        },
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert JobSchedule.of(job) == JobSchedule("*/30 * * * *", "America/New_York", 5, 2, 15, 120)


def test_creating_a_job_below_the_minimum_interval_names_it(alice_client, sample_plugin):
    Plugin.objects.filter(pk=sample_plugin.pk).update(min_interval=300)
    response = alice_client.post(
        reverse("job_create", args=[sample_plugin.pk]),
        {"new-description": "x", "new-config": json.dumps({"name": "A"}), "new-schedule": "every 1m"},
    )
    assert response.status_code == 400
    assert "allows at most one run every 5 minutes" in response.text
    assert not Job.objects.exists()


# --- the admin ----------------------------------------------------------------------------------


def test_the_admin_edits_schedules_with_the_same_rules(operator, alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "A"})
    url = reverse("admin:scheduler_app_job_change", args=[job.pk])
    page = operator.get(url)
    assert page.status_code == 200 and 'name="schedule"' in page.text and 'name="max_retries"' in page.text
    assert "every 10 seconds (the plugin&#x27;s interval)" in page.text  # the next runs, read-only
    base = {"user": alice.pk, "description": "", "config": json.dumps({"name": "A"})}
    Plugin.objects.filter(pk=sample_plugin.pk).update(min_interval=60)
    bad = operator.post(url, {**base, "schedule": "*/10 * * * * *", "timezone": "UTC"})
    assert bad.status_code == 400
    assert "minimum interval" in bad.context["adminform"].form.errors["schedule"][0]
    good = operator.post(url, {**base, "schedule": "0 8 * * 1-5", "timezone": "Europe/Paris", "max_retries": "3"})
    assert good.status_code == 302, good.context and good.context["adminform"].form.errors
    job.refresh_from_db()
    assert (job.schedule, job.timezone, job.max_retries) == ("0 8 * * 1-5", "Europe/Paris", 3)


def test_the_admin_sets_a_plugins_minimum_interval(operator, sample_plugin):
    url = reverse("admin:scheduler_app_plugin_change", args=[sample_plugin.pk])
    response = operator.post(
        url,
        {
            "name": "Sample",
            "package": sample_plugin.package,
            "interval": 10,
            "min_interval": 0,
            "timeout": 60,
            "enabled": "on",
        },
    )
    assert response.status_code == 200 and "min_interval" in response.context["adminform"].form.errors
    data = {"name": "Sample", "package": sample_plugin.package, "interval": 10, "min_interval": 30, "timeout": 60}
    assert operator.post(url, data).status_code == 302
    sample_plugin.refresh_from_db()
    assert sample_plugin.min_interval == 30


# --- fixtures -----------------------------------------------------------------------------------


def test_the_demo_data_has_a_weekday_cron_job_in_a_time_zone_and_a_retrying_job(db):
    call_command("loaddata", "demo", verbosity=0)
    cron = Job.objects.filter(schedule__regex=r"^\S+ \S+ \* \* 1-5$").exclude(timezone__in=["", "UTC"])
    assert cron.exists()
    assert Job.objects.filter(max_retries__gt=0).exists()
    # every demo job passes the same rules as the pages and the admin
    for job in Job.objects.select_related("plugin", "user"):
        clean = services.validate_schedule(job.plugin, JobSchedule.of(job), user=job.user)
        assert clean.schedule == job.schedule
