"""The access matrix of the users' pages and actions: anonymous, owner, another user, staff
with every permission, staff without permissions, and a non-staff user with the permission.

Another user's ids in a URL give 404 and change nothing. Reading another user's pages needs
the permission ``scheduler_app.view_job`` (``access.can_view``), not staff status; with it,
pages are read-only and actions are 404 (the admin is the operators' tool for changes);
cross-site posts are refused by CSRF. The websocket's matrix is in test_consumers.py.
"""

from __future__ import annotations

import pytest
from django.test import Client

from scheduler_app import services
from scheduler_app.models import Job, JobRun


@pytest.fixture
def world(alice, bob, staff, staff_only, auditor, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": "Ann"}, description="alice's", activate=True)
    spare = services.create_job(alice, sample_plugin, {"name": "Spare"}, description="spare")
    run = JobRun.objects.create(job=job, slot=job.created_at, status=JobRun.Status.SUCCEEDED)
    return {
        "alice": alice,
        "bob": bob,
        "staff": staff,
        "staff_only": staff_only,
        "auditor": auditor,
        "plugin": sample_plugin,
        "job": job,
        "spare": spare,
        "run": run,
    }


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def snapshot() -> list[tuple]:
    jobs = list(Job.objects.order_by("id").values_list("id", "user_id", "config", "description", "active"))
    runs = list(JobRun.objects.order_by("id").values_list("id", "job_id", "status"))
    return [*jobs, *runs]


def pages(w) -> list[str]:
    return [
        "/",
        f"/plugins/{w['plugin'].pk}/",
        f"/users/{w['alice'].pk}/plugins/{w['plugin'].pk}/",
        f"/?user={w['alice'].pk}",
        f"/jobs/{w['job'].pk}/runs/",
        f"/runs/{w['run'].pk}/",
        f"/jobs/{w['job'].pk}/delete/",
    ]


def actions(w) -> list[tuple[str, dict]]:
    job = w["job"].pk
    spare = w["spare"].pk
    return [
        (
            f"/jobs/{job}/save/",
            {f"job-{job}-description": "hacked", f"job-{job}-config": '{"name": "Mallory", "times": 1}'},
        ),
        (f"/jobs/{spare}/activate/", {}),
        (f"/jobs/{job}/deactivate/", {}),
        (f"/jobs/{job}/run/", {}),
        (f"/jobs/{job}/clone/", {}),
        (f"/jobs/{job}/delete/", {}),
    ]


def test_anonymous_is_sent_to_login_for_every_page_and_action(world):
    client = client_for(None)
    for url in pages(world):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), url
    before = snapshot()
    for url, data in [*actions(world), (f"/plugins/{world['plugin'].pk}/jobs/new/", {"new-config": "{}"})]:
        response = client.post(url, data)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
    assert snapshot() == before


def test_the_login_page_is_public(world):
    assert client_for(None).get("/accounts/login/").status_code == 200


def test_the_owner_opens_every_page(world):
    client = client_for(world["alice"])
    for url in pages(world):
        assert client.get(url).status_code == 200, url


def test_another_user_gets_404_for_every_page_of_alice(world):
    client = client_for(world["bob"])
    for url in pages(world)[1:]:  # bob's own dashboard and plugin page are fine; alice's ids are not
        if url == f"/plugins/{world['plugin'].pk}/":
            continue
        assert client.get(url).status_code == 404, url


def test_another_users_plugin_page_shows_only_their_own_jobs(world):
    body = client_for(world["bob"]).get(f"/plugins/{world['plugin'].pk}/").content.decode()
    assert "alice&#x27;s" not in body and "alice's" not in body
    assert f'id="job-{world["job"].pk}"' not in body


def test_another_user_changes_nothing_through_any_action(world):
    client = client_for(world["bob"])
    before = snapshot()
    for url, data in actions(world):
        assert client.post(url, data).status_code == 404, url
    assert snapshot() == before


def test_staff_view_every_page_of_anyone(world):
    client = client_for(world["staff"])
    for url in pages(world)[:-1]:  # the delete confirmation is an action's page: owners only
        assert client.get(url).status_code == 200, url
    body = client.get(f"/users/{world['alice'].pk}/plugins/{world['plugin'].pk}/").content.decode()
    assert "alice&#x27;s" in body
    assert "read-only" in body
    assert f"/jobs/{world['job'].pk}/save/" in body  # the form is shown...
    assert f"/jobs/{world['job'].pk}/activate/" not in body  # ...but no action buttons
    assert f"/jobs/{world['job'].pk}/clone/" not in body


def test_staff_change_nothing_of_another_user_here(world):
    client = client_for(world["staff"])
    before = snapshot()
    for url, data in actions(world):
        assert client.post(url, data).status_code == 404, url
    assert client.get(f"/jobs/{world['job'].pk}/delete/").status_code == 404
    assert snapshot() == before


def test_a_normal_user_cannot_view_another_user_through_the_user_parameter(world):
    client = client_for(world["bob"])
    assert client.get(f"/?user={world['alice'].pk}").status_code == 404
    assert client.get("/?user=abc").status_code == 404
    assert client.get(f"/?user={world['bob'].pk}").status_code == 200


def test_actions_refuse_get(world):
    client = client_for(world["alice"])
    before = snapshot()
    for url, _ in actions(world)[:-1]:  # delete's GET is its confirmation page
        assert client.get(url).status_code == 405, url
    assert snapshot() == before


def test_cross_site_posts_are_refused(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["alice"])
    before = snapshot()
    for url, data in [*actions(world), (f"/plugins/{world['plugin'].pk}/jobs/new/", {"new-config": "{}"})]:
        assert client.post(url, data).status_code == 403, url
    assert snapshot() == before


def test_posts_with_the_pages_csrf_token_work(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["alice"])
    client.get(f"/plugins/{world['plugin'].pk}/")
    token = client.cookies["csrftoken"].value
    response = client.post(f"/jobs/{world['job'].pk}/clone/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Job.objects.filter(user=world["alice"]).count() == 3


def test_every_form_on_the_pages_carries_a_csrf_token(world):
    body = client_for(world["alice"]).get(f"/plugins/{world['plugin'].pk}/").content.decode()
    forms = body.count('method="post"')
    assert forms >= 6
    assert body.count('name="csrfmiddlewaretoken"') == forms


def test_staff_pick_whose_jobs_to_view_and_users_do_not(world):
    body = client_for(world["staff"]).get("/").content.decode()
    assert 'name="user"' in body and ">alice</option>" in body
    assert 'name="user"' not in client_for(world["alice"]).get("/").content.decode()


# --- reading needs the permission, not staff status ---------------------------------------------


def test_staff_without_the_permission_see_only_their_own(world):
    client = client_for(world["staff_only"])
    assert client.get("/").status_code == 200 and client.get(f"/plugins/{world['plugin'].pk}/").status_code == 200
    for url in pages(world)[2:]:  # everything of alice's: her plugin page, her dashboard, runs, run
        assert client.get(url).status_code == 404, url
    body = client.get("/").content.decode()
    assert 'name="user"' not in body  # no picker of other users
    assert "/admin/" in body  # staff status still opens the admin


def test_staff_without_the_permission_change_nothing(world):
    client = client_for(world["staff_only"])
    before = snapshot()
    for url, data in actions(world):
        assert client.post(url, data).status_code == 404, url
    assert snapshot() == before


def test_the_permission_without_staff_status_reads_every_page_read_only(world):
    client = client_for(world["auditor"])
    for url in pages(world)[:-1]:
        assert client.get(url).status_code == 200, url
    body = client.get(f"/users/{world['alice'].pk}/plugins/{world['plugin'].pk}/").content.decode()
    assert "read-only" in body and f"/jobs/{world['job'].pk}/activate/" not in body
    assert 'name="user"' in client.get("/").content.decode()
    before = snapshot()
    for url, data in actions(world):
        assert client.post(url, data).status_code == 404, url
    assert snapshot() == before


def test_the_permission_can_come_from_a_group(world):
    from django.contrib.auth.models import Group, Permission

    operators = Group.objects.create(name="operators")
    operators.permissions.add(Permission.objects.get(content_type__app_label="scheduler_app", codename="view_job"))
    world["staff_only"].groups.add(operators)
    assert client_for(world["staff_only"]).get(f"/runs/{world['run'].pk}/").status_code == 200


def test_can_view_is_the_one_rule(world):
    from scheduler_app.access import can_view

    alice, bob = world["alice"], world["bob"]
    assert can_view(alice, alice) and can_view(alice, alice.pk)
    assert not can_view(bob, alice) and not can_view(world["staff_only"], alice)
    assert can_view(world["staff"], alice) and can_view(world["auditor"], alice.pk)
    inactive = world["auditor"]
    inactive.is_active = False
    assert not can_view(inactive, alice)
