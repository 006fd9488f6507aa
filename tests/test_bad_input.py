"""Hostile config input on the users' pages and in the admin: a 400 with a field error, nothing stored.

The named cases are the ones that gave server errors (nesting 1,000 deep, an integer of 5,000
digits, NUL, a lone surrogate, NaN); the property-based tests then post hundreds of generated
payloads (wrong types, huge and deep values, NUL and surrogates, extra keys) to the user page's
save and the admin's job form and require zero server errors. NUL and surrogates fail only on
PostgreSQL's ``jsonb``, so these tests matter on both database legs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_app import config_input, services
from scheduler_app.models import Job, Plugin
from scheduler_app.services import ConfigValidationError

KINDS = "tests.plugins.kinds_plugin@v1_0_0.plugin.Plugin"
FUZZ_EXAMPLES = 300


@pytest.fixture
def kinds(db) -> Plugin:
    return Plugin.objects.create(name="Kinds", package=KINDS, interval=60)


@pytest.fixture
def job(alice, kinds) -> Job:
    return services.create_job(alice, kinds, {"must": True, "labels": {"team": "ops"}}, description="kinds")


@pytest.fixture
def user_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def admin_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def stored() -> list[tuple]:
    return list(Job.objects.order_by("id").values_list("id", "user_id", "config", "description", "active", "timeout"))


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# Config text as a browser (or an attacker) would post it, and the reason the answer must give.
HOSTILE = {
    "nested 1,000 levels": ('{"must": true, "labels": ' + deep(1000) + "}", "nested too deeply"),
    "nested 100,000 levels": (deep(100_000), "nested too deeply"),
    "nested 40 levels in a dict": ('{"must": true, "x": ' + deep(40) + "}", "nested too deeply"),
    "nested 900 levels in a list field": ('{"must": true, "items": ' + deep(900) + "}", "nested too deeply"),
    "nested 900 levels in a dict field": (
        '{"must": true, "labels": ' + '{"a": ' * 900 + "1" + "}" * 900 + "}",
        "nested too deeply",
    ),
    "integer of 5,000 digits": ('{"must": true, "count": ' + "9" * 5000 + "}", "too large"),
    "integer beyond 64 bits": ('{"must": true, "limit": ' + str(2**64) + "}", "too large"),
    "NUL in a value": ('{"must": true, "note": "a\\u0000b"}', "NUL"),
    "NUL in a key": ('{"must": true, "labels": {"a\\u0000": "b"}}', "NUL"),
    "lone surrogate": ('{"must": true, "note": "\\ud800"}', "surrogate"),
    "lone low surrogate in a key": ('{"must": true, "labels": {"\\udfff": "b"}}', "surrogate"),
    "NaN": ('{"must": true, "ratio": NaN}', "NaN"),
    "Infinity": ('{"must": true, "ratio": -Infinity}', "Infinity"),
    "1e400 (infinite once parsed)": ('{"must": true, "ratio": 1e400}', "finite"),
    "a NaN made by the model from text": ('{"must": true, "note": "x", "ratio": "nan"}', "Ratio"),
}


@pytest.mark.parametrize("text, reason", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_user_page_answers_400_with_the_reason_and_stores_nothing(user_client, job, text, reason):
    before = stored()
    response = user_client.post(
        f"/jobs/{job.pk}/save/", {f"job-{job.pk}-description": "changed", f"job-{job.pk}-config": text}
    )
    assert response.status_code == 400
    assert reason in response.content.decode()
    assert stored() == before


@pytest.mark.parametrize("text, reason", HOSTILE.values(), ids=HOSTILE.keys())
def test_creating_on_the_user_page_answers_400_and_stores_nothing(user_client, kinds, text, reason):
    response = user_client.post(f"/plugins/{kinds.pk}/jobs/new/", {"new-description": "", "new-config": text})
    assert response.status_code == 400
    assert reason in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize("text, reason", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_admin_answers_400_with_a_field_error_and_stores_nothing(admin_client, job, alice, text, reason):
    before = stored()
    change = admin_client.post(
        reverse("admin:scheduler_app_job_change", args=[job.pk]),
        {"user": alice.pk, "description": "changed", "config": text},
    )
    assert change.status_code == 400
    assert reason in " ".join(change.context["adminform"].form.errors["config"])
    add = admin_client.post(
        reverse("admin:scheduler_app_job_add") + f"?plugin={job.plugin_id}",
        {"user": alice.pk, "description": "new", "config": text},
    )
    assert add.status_code == 400 and "config" in add.context["adminform"].form.errors
    assert stored() == before


@pytest.mark.parametrize(
    "config",
    [
        {"must": True, "note": "a\x00b"},
        {"must": True, "labels": {"\ud800": "x"}},
        {"must": True, "ratio": float("nan")},
        {"must": True, "limit": 10**30},
        {"must": True, "labels": {"x": json.loads(deep(50))}},
    ],
    ids=["NUL", "surrogate key", "NaN", "huge int", "deep"],
)
def test_the_service_refuses_unstorable_configs_on_every_path(alice, kinds, config):
    # The shell and commands call the service directly: the same rule, before any database sees it.
    with pytest.raises(ConfigValidationError):
        services.create_job(alice, kinds, config)
    assert not Job.objects.exists()


def test_the_checker_names_where_the_problem_is():
    with pytest.raises(ConfigValidationError) as caught:
        config_input.check_storable({"labels": {"ok": "fine", "bad": "x\x00"}, "items": [{"name": "\udc00"}]})
    locs = {error.loc for error in caught.value.errors}
    assert locs == {("labels", "bad"), ("items", 0, "name")}


def test_configs_within_the_limits_still_save(alice, kinds):
    job = services.create_job(
        alice,
        kinds,
        {"must": True, "limit": 2**63 - 1, "note": "émoji 🎉 and \t tabs", "labels": {"k": "v" * 10_000}},
    )
    job.refresh_from_db()
    assert job.config["limit"] == 2**63 - 1 and job.config["note"] == "émoji 🎉 and \t tabs"


# --- property-based: generated payloads, zero server errors ---------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text put into the payload as is (what json.dumps cannot or will not write)."""

    text: str

    def __repr__(self) -> str:  # the failing example is printed: keep huge ones readable
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''} {len(self.text)} chars)"


# Text with what breaks databases mixed in: NUL, lone surrogates, control characters, emoji.
_chars = st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\x1b", "🎉"]))
_text = st.text(_chars, max_size=30)
_form_chars = st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(["\x00", "\x1b"]))
_form_text = st.text(_form_chars, max_size=30)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    st.integers(min_value=20, max_value=6000).map(lambda n: Raw("9" * n)),
    st.integers(min_value=20, max_value=3000).map(lambda n: Raw(deep(n))),
    st.sampled_from([Raw("NaN"), Raw("-Infinity"), Raw("1e999"), Raw("-0"), Raw("[" + "1," * 50_000 + "1]")]),
)
_keys = st.one_of(st.sampled_from(["must", "word", "count", "ratio", "note", "limit", "labels", "items"]), _text)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)
# Mostly objects shaped like the plugin's Config, sometimes anything at all, sometimes not JSON.
_configs = st.one_of(
    st.fixed_dictionaries(
        {"must": st.one_of(st.booleans(), _values)},
        optional={
            k: _values for k in ("word", "count", "ratio", "note", "limit", "labels", "items", "endpoint", "evil")
        },
    ),
    st.dictionaries(_keys, _values, max_size=6),
    _values,
    # Not JSON at all: what a form field can carry (a lone surrogate is no UTF-8, so no client sends it raw).
    _form_text.map(Raw),
)


def dump(value: Any) -> str:
    """JSON text of ``value``, with Raw pieces spliced in (json.dumps escapes surrogates as \\udxxx)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


# A browser cannot send a lone surrogate in a form field (the bytes are not UTF-8), NUL it can.
_descriptions = st.text(st.characters(exclude_categories=["Cs"]), max_size=250)


def assert_stored_configs_are_clean(plugin: Plugin) -> None:
    for config in Job.objects.filter(plugin=plugin).values_list("config", flat=True):
        config_input.check_storable(config)
        assert services.validate_config(plugin, config) == config


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=_configs, description=_descriptions)
def test_fuzz_the_user_pages_save_gives_no_server_error(user_client, job, config, description):
    before = stored()
    response = user_client.post(
        f"/jobs/{job.pk}/save/", {f"job-{job.pk}-description": description, f"job-{job.pk}-config": dump(config)}
    )
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 400:
        assert stored() == before
    assert_stored_configs_are_clean(job.plugin)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    config=_configs,
    description=_descriptions,
    timeout=st.one_of(st.none(), st.integers().map(str), st.sampled_from(["", "-1", "0", "1e3", "9" * 40, "x"])),
    active=st.booleans(),
)
def test_fuzz_the_admins_job_form_gives_no_server_error(admin_client, job, alice, config, description, timeout, active):
    before = stored()
    data = {"user": alice.pk, "description": description, "config": dump(config)}
    if timeout is not None:
        data["timeout"] = timeout
    if active:
        data["active"] = "on"
    response = admin_client.post(reverse("admin:scheduler_app_job_change", args=[job.pk]), data)
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 400:
        assert stored() == before
    assert_stored_configs_are_clean(job.plugin)
