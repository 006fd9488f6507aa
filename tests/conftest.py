"""Shared fixtures: personas (alice and bob own jobs, charlie owns nothing, staff is an
operator with every permission, staff_only may enter the admin but holds no permission,
auditor is no staff but may read every user's jobs) and registered example plugins."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from scheduler_app.models import Plugin

SAMPLE = "plugins.sample_plugin@v0_1_0.plugin.Plugin"
SAMPLE_V2 = "plugins.sample_plugin@v0_2_0.plugin.Plugin"


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", "alice@example.com", "alice-pass")


@pytest.fixture
def alice_client(client, alice):
    """Django's test client, logged in as alice."""
    client.force_login(alice)
    return client


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", "bob@example.com", "bob-pass")


@pytest.fixture
def charlie(db):
    return get_user_model().objects.create_user("charlie", "charlie@example.com", "charlie-pass")


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("staff", "staff@example.com", "staff-pass")


@pytest.fixture
def staff_only(db):
    """Staff status alone: into the admin, but no permission to read other users' jobs."""
    return get_user_model().objects.create_user("sam", "sam@example.com", "sam-pass", is_staff=True)


@pytest.fixture
def auditor(db):
    """Not staff, but holds the permission to read every user's jobs, runs and logs."""
    user = get_user_model().objects.create_user("audrey", "audrey@example.com", "audrey-pass")
    user.user_permissions.add(Permission.objects.get(content_type__app_label="scheduler_app", codename="view_job"))
    return user


@pytest.fixture
def sample_plugin(db):
    return Plugin.objects.create(name="Sample", package=SAMPLE, interval=10)


@pytest.fixture
def sample_v2_plugin(db):
    return Plugin.objects.create(name="Sample v2", package=SAMPLE_V2, interval=15)
