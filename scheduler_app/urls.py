"""The users' pages (scheduler_app.views); the live log websocket is in routing.py."""

from __future__ import annotations

from django.urls import path

from scheduler_app import ops_views, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("plugins/<int:plugin_id>/", views.plugin_page, name="plugin"),
    path("plugins/<int:plugin_id>/jobs/new/", views.job_create, name="job_create"),
    path("users/<int:user_id>/plugins/<int:plugin_id>/", views.plugin_page, name="user_plugin"),
    path("jobs/<int:job_id>/save/", views.job_save, name="job_save"),
    path("jobs/<int:job_id>/clone/", views.job_clone, name="job_clone"),
    path("jobs/<int:job_id>/activate/", views.job_activate, name="job_activate"),
    path("jobs/<int:job_id>/deactivate/", views.job_deactivate, name="job_deactivate"),
    path("jobs/<int:job_id>/run/", views.job_run_now, name="job_run_now"),
    path("jobs/<int:job_id>/delete/", views.job_delete, name="job_delete"),
    path("jobs/<int:job_id>/runs/", views.job_runs, name="job_runs"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/again/", views.run_again, name="run_again"),
    path("schedules/preview/", views.schedule_preview, name="schedule_preview"),
    path("runs/<int:run_id>/state/", views.run_state, name="run_state"),
    path("state/", views.jobs_state, name="jobs_state"),
    path("runs/<int:run_id>/lines/", views.run_log_lines, name="run_lines"),
    path("runs/<int:run_id>/log.txt", views.run_log_download, name="run_log"),
    path("jobs/<int:job_id>/history/", ops_views.job_history, name="job_history"),
]
