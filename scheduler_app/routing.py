"""Websocket routes, mounted by jobscheduler/asgi.py behind auth and origin checks."""

from __future__ import annotations

from django.urls import path

from scheduler_app.consumers import LogConsumer

websocket_urlpatterns = [
    path("ws/logs/<int:plugin_id>/<int:user_id>/", LogConsumer.as_asgi()),
]
