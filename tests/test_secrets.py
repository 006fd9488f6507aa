"""Secrets in job configs: encrypted at rest, shown as "set" with a Clear action, rotated, never printed."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings

from scheduler_app import plugin_host, secretbox, services
from scheduler_app.models import Job, Plugin

PROD = "plugins.prod_plugin@v0_1_0.plugin.Plugin"
TOKEN = "tok-0123456789-very-secret"


@pytest.fixture
def prod(db) -> Plugin:
    return Plugin.objects.create(name="Prod", package=PROD, interval=60)


@pytest.fixture
def job(alice, prod) -> Job:
    return services.create_job(alice, prod, {"token": TOKEN}, description="deploy")


def raw_config(job: Job) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT config FROM scheduler_app_job WHERE id = %s", [job.pk])
        value = cursor.fetchone()[0]
    return value if isinstance(value, str) else json.dumps(value)


def test_a_secret_is_stored_encrypted_and_the_plugin_gets_its_value(job):
    assert TOKEN not in raw_config(job)
    assert job.config["token"].startswith("fernet:")
    model = plugin_host.get_plugin(PROD).validate(Job.objects.get(pk=job.pk).config)
    assert model.token.get_secret_value() == TOKEN


def test_the_page_says_the_secret_is_set_never_shows_it_and_clear_empties_it(alice, job):
    client = Client()
    client.force_login(alice)
    body = client.get(f"/plugins/{job.plugin_id}/").content.decode()
    assert TOKEN not in body and job.config["token"] not in body
    assert "data-secret-state>set<" in body
    assert f'name="job-{job.pk}-clear_secret"' in body
    # Saving with the secret left blank keeps it...
    fields = {f"job-{job.pk}-description": "deploy", f"job-{job.pk}-config": json.dumps({"token": ""})}
    assert client.post(f"/jobs/{job.pk}/save/", fields).status_code == 302
    assert secretbox.reveal(Job.objects.get(pk=job.pk).config)["token"] == TOKEN
    # ...and with "Clear" ticked empties it.
    cleared = {**fields, f"job-{job.pk}-clear_secret": '["token"]'}
    assert client.post(f"/jobs/{job.pk}/save/", cleared).status_code == 302
    assert Job.objects.get(pk=job.pk).config["token"] == ""
    body = client.get(f"/plugins/{job.plugin_id}/").content.decode()
    assert "data-secret-state>not set<" in body


def test_the_admin_and_dumpdata_never_show_a_secret(job, staff):
    client = Client()
    client.force_login(staff)
    for url in (f"/admin/scheduler_app/job/{job.pk}/change/", "/admin/scheduler_app/job/"):
        assert TOKEN not in client.get(url).content.decode()
    out = StringIO()
    call_command("dumpdata", "scheduler_app.job", stdout=out)
    assert TOKEN not in out.getvalue()


def test_rotation_re_encrypts_with_the_new_key_first_and_the_old_one_can_go(job):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(CONFIG_SECRET_KEYS=[old]):
        services.update_job(job, config={"token": TOKEN})
        sealed_with_old = Job.objects.get(pk=job.pk).config["token"]
    with override_settings(CONFIG_SECRET_KEYS=[new, old]):
        out = StringIO()
        call_command("rotatesecrets", stdout=out)
        assert "1 job" in out.getvalue()
    rotated = Job.objects.get(pk=job.pk).config
    assert rotated["token"] != sealed_with_old
    with override_settings(CONFIG_SECRET_KEYS=[new]):
        assert secretbox.reveal(rotated)["token"] == TOKEN
        # a value sealed with a key no longer configured gives an error a person can act on
        with pytest.raises(plugin_host.ConfigValidationError, match="cannot be decrypted"):
            plugin_host.get_plugin(PROD).validate({"token": sealed_with_old})


def test_secrets_stored_in_clear_before_encryption_are_read_and_sealed_by_rotatesecrets(job):
    Job.objects.filter(pk=job.pk).update(config={"token": TOKEN})
    assert plugin_host.get_plugin(PROD).validate(Job.objects.get(pk=job.pk).config).token.get_secret_value() == TOKEN
    call_command("rotatesecrets", stdout=StringIO())
    assert TOKEN not in raw_config(job)
