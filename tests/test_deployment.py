"""docs/deployment.md, followed step by step: the production environment, migrate,
collectstatic, daphne behind a TLS proxy. Pages must render with the hashed static files
of ``collectstatic`` (the rest of the suite serves static files from the finders, so a
template naming a file that does not exist would only fail here, as a 500 in production).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import uuid
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import websockets

from tests.processes import ROOT, free_port, wait_for_port
from tests.test_settings import documented_production_env, run_manage

HOST = "jobs.example.com"  # ALLOWED_HOSTS of the documented environment


class ProxiedClient:
    """Talks to daphne as the TLS proxy would: Host and X-Forwarded-Proto set, cookies kept.

    (urllib's cookie jar would not send ``Secure`` cookies over the plain socket behind the proxy.)
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str = "", referer: str = "") -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        headers = {"Host": HOST, "X-Forwarded-Proto": "https"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = f"https://{HOST}"
            headers["Referer"] = referer or f"https://{HOST}{path}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        for value in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        text = response.read().decode(errors="replace")
        conn.close()
        return response.status, dict(response.headers), text

    def get(self, path: str) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path)

    def log_in(self, login_path: str, username: str, password: str) -> tuple[int, dict[str, str], str]:
        status, _, page = self.get(login_path)
        assert status == 200, page[:2000]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:2000]
        from urllib.parse import urlencode

        body = urlencode({"csrfmiddlewaretoken": token.group(1), "username": username, "password": password})
        return self.request("POST", login_path, body=body)


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("production")
    env = documented_production_env()
    env.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        # this machine's stand-ins for the production database, static folder and plugin folder
        DB_CONNECTION=f"sqlite:///{tmp / 'jobs.db'}",
        STATIC_ROOT=str(tmp / "static"),
        MODULE_PATH=str(tmp),
        CHANNEL_LAYER_PREFIX=f"deploy{uuid.uuid4().hex[:8]}",
        REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    for step in (["migrate", "--noinput"], ["loaddata", "demo"], ["collectstatic", "--noinput"]):
        outcome = run_manage(step, env, timeout=180)
        assert outcome.returncode == 0, (step, outcome)
    assert (tmp / "static" / "staticfiles.json").exists()
    port = free_port()
    log = tmp / "daphne.log"
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), **env}
    with open(log, "wb") as out:
        # The ExecStart of jobscheduler-web@.service in docs/deployment.md.
        web = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "daphne"),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--proxy-headers",
                "--application-close-timeout",
                "10",
                "jobscheduler.asgi:application",
            ],
            cwd=ROOT,
            env=clean,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for_port(port, timeout=30)
        yield ProxiedClient(port), log
    finally:
        web.terminate()
        try:
            web.wait(20)
        except subprocess.TimeoutExpired:
            web.kill()


def test_plain_http_is_redirected_to_https_and_https_gets_hsts(production):
    client, _ = production
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    conn.request("GET", "/accounts/login/", headers={"Host": HOST})
    response = conn.getresponse()
    assert response.status == 301 and response.headers["Location"] == f"https://{HOST}/accounts/login/"
    status, headers, _ = client.get("/accounts/login/")
    assert status == 200 and "max-age=31536000" in headers["Strict-Transport-Security"]


def test_an_unknown_host_is_refused(production):
    client, _ = production
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    conn.request("GET", "/accounts/login/", headers={"Host": "evil.example", "X-Forwarded-Proto": "https"})
    assert conn.getresponse().status == 400


def test_the_pages_render_with_collected_static_files(production):
    client, log = production
    status, _, login = client.get("/accounts/login/")
    assert status == 200
    static = re.findall(r'(?:href|src)="(/static/[^"]+)"', login)
    assert static and all(re.search(r"\.[0-9a-f]{12}\.(css|js|svg)$", path) for path in static), static
    for path in static:
        assert client.get(path)[0] == 200, path

    status, headers, _ = client.log_in("/accounts/login/", "alice", "alice")
    assert status == 302, headers
    for path in ("/", "/plugins/1/", "/jobs/1/runs/"):
        status, _, page = client.get(path)
        assert status == 200, (path, status, page[:500], log.read_text()[-3000:])
        for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', page):
            assert client.get(asset)[0] == 200, asset


def test_the_admin_works_behind_the_proxy(production):
    client, log = production
    status, headers, _ = client.log_in("/admin/login/", "admin", "admin")
    assert status == 302, headers
    for path in (
        "/admin/",
        "/admin/scheduler_app/plugin/",
        "/admin/scheduler_app/plugin/available/",
        "/admin/scheduler_app/job/1/change/",
        "/admin/scheduler_app/jobrun/",
        "/admin/scheduler_app/schedulernode/",
    ):
        status, _, page = client.get(path)
        assert status == 200, (path, status, page[:500], log.read_text()[-3000:])


def test_the_live_log_accepts_the_public_https_origin_only(production):
    """Behind the proxy the site's own origin is https://jobs.example.com (X-Forwarded-Proto)."""
    client, log = production
    status, headers, _ = client.log_in("/accounts/login/", "alice", "alice")
    assert status == 302, headers

    async def handshake(origin: str) -> str:
        # The proxy's connection: Host jobs.example.com and X-Forwarded-Proto, on daphne's port.
        sock = socket.create_connection(("127.0.0.1", client.port), timeout=10)
        try:
            async with websockets.connect(
                f"ws://{HOST}/ws/logs/1/2/",
                sock=sock,
                origin=origin,
                additional_headers={"Cookie": f"sessionid={client.cookies['sessionid']}", "X-Forwarded-Proto": "https"},
                open_timeout=10,
            ) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 10))["type"]
        except websockets.InvalidStatus as exc:
            return f"refused {exc.response.status_code}"

    assert asyncio.run(handshake(f"https://{HOST}")) == "hello", log.read_text()[-3000:]
    assert asyncio.run(handshake(f"http://{HOST}")) == "refused 403"
    assert asyncio.run(handshake(f"https://{HOST}:4444")) == "refused 403"
    assert asyncio.run(handshake("https://evil.example")) == "refused 403"


def test_probes_answer_plain_http_for_any_host_under_the_production_settings(production):
    # A kubelet probes the pod's address over plain HTTP: no redirect, no 400 for the host.
    client, _ = production
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    conn.request("GET", "/healthz", headers={"Host": "10.0.0.5:8000"})
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"status": "ok"})
    conn.request("GET", "/readyz", headers={"Host": "10.0.0.5:8000"})
    response = conn.getresponse()
    body = json.loads(response.read())
    # no runscheduler in this test: not ready, and the body says why
    assert response.status == 503 and "scheduler_nodes" in body["failing"]
    assert body["checks"]["database"] == {"ok": True}
