"""The pages' fixed queries compiled once per process (scheduler_app/compiled_sql.py): only the
SQL text is kept, so every call reads the current rows, and the session stays revocable."""

from __future__ import annotations

import pytest
from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from scheduler_app import compiled_sql, services
from scheduler_app.models import Job


@pytest.fixture
def job(alice, sample_plugin) -> Job:
    return services.create_job(alice, sample_plugin, {"name": "Ann", "times": 2}, description="greeter", activate=True)


def test_each_call_runs_the_query_with_its_own_values_and_compiles_once(alice, bob, sample_plugin, monkeypatch):
    mine = services.create_job(alice, sample_plugin, {"name": "Ann", "times": 2}, description="alice's")
    theirs = services.create_job(bob, sample_plugin, {"name": "Bob", "times": 1}, description="bob's")
    query = compiled_sql.CompiledQuery(lambda user_id: Job.objects.filter(user_id=user_id).order_by("pk"), user_id=-1)
    assert [j.pk for j in query.run(user_id=alice.pk)] == [mine.pk]
    compiles = []
    real = compiled_sql.CompiledQuery.compile
    monkeypatch.setattr(compiled_sql.CompiledQuery, "compile", lambda self: compiles.append(1) or real(self))
    with CaptureQueriesContext(connection) as queries:
        assert [j.pk for j in query.run(user_id=bob.pk)] == [theirs.pk]
    assert len(queries) == 1 and str(bob.pk) in queries[0]["sql"]
    # Edited rows show at once: nothing but the SQL is kept.
    Job.objects.filter(pk=mine.pk).update(description="edited")
    assert query.run(user_id=alice.pk)[0].description == "edited"
    assert query.run(user_id=-5) == []
    assert len(compiles) == 3  # each call asks, and the SQL was kept from the first
    assert len(query._by_alias) == 1


def test_select_related_rows_come_back_as_the_orm_builds_them(job):
    query = compiled_sql.CompiledQuery(
        lambda job_id: Job.objects.select_related("plugin", "user").filter(pk=job_id), job_id=-1
    )
    (row,) = query.run(job_id=job.pk)
    with CaptureQueriesContext(connection) as queries:
        assert (row.plugin.name, row.user.username, row.config) == (job.plugin.name, job.user.username, job.config)
    assert len(queries) == 0


def test_a_value_that_would_change_the_sql_is_refused(alice):
    query = compiled_sql.CompiledQuery(
        lambda user_id: Job.objects.filter(user_id=user_id, plugin_id=user_id), user_id=-1
    )
    with pytest.raises(ImproperlyConfigured, match="2 times"):
        query.run(user_id=alice.pk)
    with pytest.raises(ImproperlyConfigured, match="only ints"):
        compiled_sql.CompiledQuery(lambda ids: Job.objects.filter(pk__in=ids), ids=[1, 2]).run(ids=[1])


def test_a_deleted_or_expired_session_logs_out_at_once(alice, job):
    client = Client()
    client.force_login(alice)
    assert client.get(f"/jobs/{job.pk}/runs/").status_code == 200
    Session.objects.all().delete()  # an operator ends every session, or the user logs out elsewhere
    assert client.get(f"/jobs/{job.pk}/runs/").status_code == 302
    client.force_login(alice)
    assert client.get("/").status_code == 200
    Session.objects.update(expire_date="2000-01-01T00:00:00Z")
    assert client.get("/").status_code == 302


def test_an_edited_job_and_a_disabled_plugin_show_on_the_next_page_view(alice_client, job, sample_plugin):
    assert "greeter" in alice_client.get(f"/jobs/{job.pk}/runs/").content.decode()
    services.update_job(job, config=job.config, description="renamed")
    assert "renamed" in alice_client.get(f"/jobs/{job.pk}/runs/").content.decode()
    assert "renamed" in alice_client.get(f"/plugins/{sample_plugin.pk}/").content.decode()
    assert "renamed" in alice_client.get("/").content.decode()
    services.delete_job(job)
    assert alice_client.get(f"/jobs/{job.pk}/runs/").status_code == 404
    assert alice_client.get(f"/plugins/{sample_plugin.pk + 1000}/").status_code == 404
