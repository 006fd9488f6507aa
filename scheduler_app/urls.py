"""The users' pages (built by the web-pages work)."""

from django.urls import path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/"), name="dashboard"),
]
