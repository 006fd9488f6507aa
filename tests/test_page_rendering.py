"""The cheaper page machinery renders and authenticates exactly as Django's own did.

- ``scheduler_app.form_renderer``: the input widgets written in Python give the same HTML as
  Django's widget templates, attribute for attribute and escape for escape; anything else still
  goes through the templates.
- ``scheduler_app.auth_backend``: the compiled user lookup gives the same user (or none) as
  ``ModelBackend``, and sessions recorded with ``ModelBackend`` stay logged in.
"""

from __future__ import annotations

import pytest
from django import forms
from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY
from django.contrib.auth.backends import ModelBackend
from django.db import connection
from django.forms.renderers import DjangoTemplates
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.safestring import mark_safe

from scheduler_app import auth_backend, services
from scheduler_app.form_renderer import PAGE_FORM_RENDERER, PageFormRenderer
from scheduler_app.forms import JobForm

ODD = "a \"quoted\" <b>bold</b> & 'single'"


class _Everything(forms.Form):
    text = forms.CharField(widget=forms.TextInput(attrs={"placeholder": ODD, "data-x": 0, "autofocus": True}))
    number = forms.IntegerField(widget=forms.NumberInput(attrs={"min": 0, "max": 5, "hidden": False}))
    email = forms.EmailField()
    url = forms.URLField(assume_scheme="https")
    password = forms.CharField(widget=forms.PasswordInput(render_value=True))
    hidden = forms.CharField(widget=forms.HiddenInput)
    safe = forms.CharField(widget=forms.TextInput(attrs={"title": mark_safe("<i>kept</i>")}))
    floaty = forms.FloatField(widget=forms.NumberInput(attrs={"step": 0.5}))
    area = forms.CharField(widget=forms.Textarea)  # not an input: still the template
    choice = forms.ChoiceField(choices=[("a", ODD)])  # not an input: still the template
    flag = forms.BooleanField(required=False)  # not an input.html include: still the template


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"text": ODD, "number": "3", "email": "a@b.c", "url": ODD, "password": ODD, "hidden": ODD, "safe": "x"},
        {"text": "", "number": "not a number", "floaty": "1.5", "area": ODD, "choice": "a", "flag": "on"},
    ],
)
@pytest.mark.parametrize("disabled", [False, True])
def test_each_widget_renders_as_djangos_templates_do(data, disabled):
    ours, django = _Everything(data, renderer=PAGE_FORM_RENDERER), _Everything(data, renderer=DjangoTemplates())
    for form in (ours, django):
        for field in form.fields.values():
            field.disabled = disabled
    for name in ours.fields:
        assert str(ours[name]) == str(django[name]), name
    assert str(ours) == str(django)  # labels, errors, the whole form's layout


def test_only_the_input_widgets_skip_their_templates(monkeypatch):
    used = []
    real = DjangoTemplates.render

    def render(self, name, *args, **kwargs):
        used.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(DjangoTemplates, "render", render)
    form = _Everything(renderer=PageFormRenderer())
    for name in ("text", "number", "email", "url", "password", "hidden", "safe", "floaty"):
        str(form[name])
    assert used == []
    str(form["area"]), str(form["choice"]), str(form["flag"])
    assert used == [
        "django/forms/widgets/textarea.html",
        "django/forms/widgets/select.html",
        "django/forms/widgets/checkbox.html",
    ]


def test_a_widget_with_an_unusual_value_goes_through_the_template():
    # A callable or a lazy value would be called or translated by a template: not reproduced.
    widget = forms.TextInput(attrs={"data-lazy": lambda: "called"})
    assert PAGE_FORM_RENDERER.render("django/forms/widgets/text.html", widget.get_context("n", "v", None)) == (
        DjangoTemplates().render("django/forms/widgets/text.html", widget.get_context("n", "v", None))
    )


def test_the_job_form_renders_as_with_djangos_renderer(alice, sample_plugin):
    job = services.create_job(alice, sample_plugin, {"name": ODD, "times": 2}, description=ODD)
    for data in (None, {"job-description": ODD, "job-schedule": "<bad>", "job-jitter_seconds": "-1"}):
        for readonly in (False, True):
            kwargs = {"prefix": "job", "stored": job.config, "readonly": readonly, "user": alice, "job": job}
            ours = JobForm(sample_plugin, data, **kwargs)
            django = JobForm(sample_plugin, data, renderer=DjangoTemplates(), **kwargs)
            assert ours.renderer is PAGE_FORM_RENDERER
            for name in ours.fields:
                assert str(ours[name]) == str(django[name]), (name, data, readonly)


# --- the user lookup ---------------------------------------------------------------------------


def test_new_logins_use_the_compiled_lookup_with_one_query(alice, sample_plugin):
    client = Client()
    assert client.post("/accounts/login/", {"username": "alice", "password": "alice-pass"}).status_code == 302
    assert client.session[BACKEND_SESSION_KEY] == auth_backend.PATH
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/favicon.ico").status_code in (200, 302)  # the trivial view: no user loaded
        response = client.get("/")
    assert response.status_code == 200 and response.wsgi_request.user == alice
    users = [q["sql"] for q in queries if 'FROM "auth_user"' in q["sql"] and "auth_user_groups" not in q["sql"]]
    assert len(users) == 1, users
    assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200


def test_a_session_recorded_with_model_backend_stays_logged_in(alice):
    client = Client()
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    assert client.session[BACKEND_SESSION_KEY] == "django.contrib.auth.backends.ModelBackend"
    response = client.get("/")
    assert response.status_code == 200 and response.wsgi_request.user == alice


@pytest.mark.parametrize("backend", [auth_backend.CompiledModelBackend, ModelBackend])
def test_the_lookup_answers_as_model_backend_does(alice, backend):
    assert backend().get_user(alice.pk) == alice
    assert backend().get_user(str(alice.pk)) == alice  # as stored in the session
    assert backend().get_user(alice.pk + 1000) is None
    alice.is_active = False
    alice.save()
    assert backend().get_user(alice.pk) is None  # an inactive user is logged out


def test_a_deactivated_user_is_logged_out_on_the_next_request(alice):
    client = Client()
    client.force_login(alice)
    assert client.session[SESSION_KEY] == str(alice.pk)
    assert client.get("/").status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get("/").status_code == 302


# --- the job cells: the tags give the HTML the included templates gave ---------------------------

# The partial templates the tags replaced (scheduler_app/_run_cell.html, _next_run.html and
# _run_stats.html before they were removed), verbatim, with the include's trailing newline.
_RUN_CELL = (
    '{% load web %}{% if run %}<a href="{{ url }}" class="{{ run.status|status_class }}" data-run-id="{{ run.pk }}">'
    "{{ run.get_status_display }}</a>\n{{ run.finished_at|default:run.started_at|default:run.slot|rel_time }}"
    '{% if run.duration %} <span class="muted">· {{ run.duration|duration }}</span>{% endif %}'
    '{% else %}<span class="muted">never ran</span>{% endif %}\n'
)
_NEXT_RUN = (
    '{% load web %}{% if job.next_run %}<time datetime="{{ job.next_run|date:\'c\' }}" data-time="rel" '
    'data-interval="{{ interval }}" title="{{ job.next_run|date:\'Y-m-d H:i:s T\' }}">{{ job.next_run|relative }}'
    '</time>{% else %}<span class="muted">{{ none_text|default:"—" }}</span>{% endif %}\n'
)
_RUN_STATS = (
    '{% if stats %}<span class="spark-wrap">{{ stats.chart }}{% if stats.count %} <span class="spark-rate" '
    'title="succeeded among the last {{ stats.count }} finished runs">{{ stats.success_percent }}</span>{% endif %}'
    "</span>{% endif %}\n"
)


def _render(source: str, **context) -> str:
    from django.template import Context, Template

    return Template(source).render(Context(context))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_the_job_cells_are_the_html_of_the_templates_they_replaced(alice, sample_plugin, zone):
    from datetime import timedelta

    from django.utils import timezone

    from scheduler_app.models import JobRun
    from scheduler_app.stats import JobStats

    job = services.create_job(alice, sample_plugin, {"name": "Ann", "times": 2}, description=ODD)
    now = timezone.now()
    runs = [
        None,
        JobRun(pk=7, job=job, slot=now, status=JobRun.Status.QUEUED),
        JobRun(pk=8, job=job, slot=now, status=JobRun.Status.RUNNING, started_at=now - timedelta(seconds=3)),
        JobRun(pk=9, job=job, slot=now, status="timed_out", started_at=now, finished_at=now + timedelta(seconds=75)),
        JobRun(pk=10, job=job, slot=now, status="succeeded", started_at=now, finished_at=now),  # a 0 s duration
    ]
    with timezone.override(zone):
        for run in runs:
            url = ODD if run else ""
            expected = _render(_RUN_CELL, run=run, url=url)
            assert _render("{% load web %}{% run_cell run url %}", run=run, url=url) == expected
        for next_run in (None, now + timedelta(seconds=42), now - timedelta(hours=3)):
            for none_text in ("", "not scheduled"):
                row = {"next_run": next_run}
                expected = _render(_NEXT_RUN, job=row, interval=1234, none_text=none_text)
                tag = '{% load web %}{% next_run_cell job.next_run 1234 "' + none_text + '" %}'
                assert _render(tag, job=row) == expected
        for stats in (None, JobStats(), JobStats(runs=[("succeeded", 1.5), ("failed", None), ("running", 2.0)])):
            assert _render("{% load web %}{% run_stats_cell stats %}", stats=stats) == _render(_RUN_STATS, stats=stats)
