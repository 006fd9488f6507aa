"""The product's URLs plus the floor probes of ``bench/web_ratio.py --floor``.

Each probe does one part of what every user page must do and nothing else, so its requests/s
against the trivial view's (``/favicon.ico``) in the same run is the best ratio any page doing
that part can reach on this process (docs/performance.md, "The floor of a logged-in page"):

- ``/bench/floor/body/``: a constant 30 KB page (about a dashboard's HTML), anonymous;
- ``/bench/floor/query/``: one ``SELECT 1`` through Django's connection (pool lend and return,
  one round trip), anonymous;
- ``/bench/floor/login/``: ``login_required`` and the same constant page: the session and the
  user looked up exactly as every user page does (``scheduler_app.sessions``,
  ``scheduler_app.auth_backend``), no page data at all.
"""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

PAGE = b"<!doctype html>" + b"x" * 30_000


def body(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


def query(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchall()
    return HttpResponse(PAGE)


@login_required
def logged_in(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


urlpatterns = [
    path("bench/floor/body/", body),
    path("bench/floor/query/", query),
    path("bench/floor/login/", logged_in),
    path("", include("jobscheduler.urls")),
]

#: (label, path, expected status) of the probes, in the order web_ratio.py measures them
PROBES = [
    ("floor: constant 30 KB page", "/bench/floor/body/", 200),
    ("floor: one SELECT 1", "/bench/floor/query/", 200),
    ("floor: logged in, constant page", "/bench/floor/login/", 200),
]
