"""URL routes of the project; the app's pages live in scheduler_app/urls.py."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("scheduler_app.urls")),
]
