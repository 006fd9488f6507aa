"""Logging out ends open live logs: the socket is closed with 4401 within a few seconds.

The real ASGI application with a real session cookie; the session is ended the way Django's
logout (in another tab) or a password change elsewhere ends it.
"""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.test import Client, override_settings

from jobscheduler.asgi import application
from scheduler_app.consumers import CLOSE_UNAUTHENTICATED

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def open_stream(path: str, cookie: str) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"), (b"cookie", f"sessionid={cookie}".encode())]
    return WebsocketCommunicator(application, path, headers=headers)


async def next_close(comm: WebsocketCommunicator, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = await comm.receive_output(timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == "websocket.close":
            return message


@override_settings(LIVE_LOG_SESSION_CHECK_SECONDS=0.5)
async def test_logging_out_elsewhere_closes_the_stream_with_4401(alice, sample_plugin):
    cookie = await sync_to_async(logged_in_cookie)(alice)
    comm = open_stream(f"/ws/logs/{sample_plugin.pk}/{alice.pk}/", cookie)
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
    assert (await comm.receive_json_from(timeout=5))["type"] == "lines"  # the (empty) replay
    # Still logged in: the stream stays open past several checks.
    assert await comm.receive_nothing(timeout=1.5, interval=0.05)
    started = time.monotonic()
    await sync_to_async(Session.objects.filter(session_key=cookie).delete)()  # what logout does
    message = await next_close(comm, timeout=5)
    assert message["code"] == CLOSE_UNAUTHENTICATED
    assert time.monotonic() - started < 3
    await comm.wait()


@override_settings(LIVE_LOG_SESSION_CHECK_SECONDS=0.5)
async def test_a_password_change_elsewhere_closes_the_stream(alice, sample_plugin):
    cookie = await sync_to_async(logged_in_cookie)(alice)
    comm = open_stream(f"/ws/logs/{sample_plugin.pk}/{alice.pk}/", cookie)
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from(timeout=5))["type"] == "hello"

    def change_password() -> None:
        alice.set_password("a-new-password-0f-alice")
        alice.save()

    await sync_to_async(change_password)()
    assert (await next_close(comm, timeout=5))["code"] == CLOSE_UNAUTHENTICATED
    await comm.wait()


@override_settings(LIVE_LOG_SESSION_CHECK_SECONDS=0.5)
async def test_only_the_sockets_of_the_ended_session_close(alice, bob, sample_plugin):
    alices, bobs = [await sync_to_async(logged_in_cookie)(u) for u in (alice, bob)]
    streams = [
        open_stream(f"/ws/logs/{sample_plugin.pk}/{user.pk}/", cookie)
        for user, cookie in ((alice, alices), (alice, alices), (bob, bobs))
    ]
    for comm in streams:
        assert (await comm.connect())[0]
        assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
        assert (await comm.receive_json_from(timeout=5))["type"] == "lines"
    await sync_to_async(Session.objects.filter(session_key=alices).delete)()
    for comm in streams[:2]:
        assert (await next_close(comm, timeout=5))["code"] == CLOSE_UNAUTHENTICATED
        await comm.wait()
    assert await streams[2].receive_nothing(timeout=1.5, interval=0.05)  # bob is still logged in
    await streams[2].disconnect()


def test_one_check_reads_every_session_in_two_queries(alice, bob, django_assert_num_queries):
    from scheduler_app import session_watch

    pairs = {(logged_in_cookie(user), user.pk) for user in (alice, bob) for _ in range(20)}
    Session.objects.filter(session_key=next(key for key, pk in pairs if pk == bob.pk)).delete()
    with django_assert_num_queries(2):
        ended = session_watch.sessions_ended.func(pairs)
    assert {pk for _, pk in ended} == {bob.pk} and len(ended) == 1
