"""``socket_flow``: the write-flow extension appears only under daphne, and never writes around TLS.

The plain-TCP path (direct socket writes, the buffer bound) is exercised end to end through a
real daphne in ``tests/test_live_logs_slow_viewer.py``.
"""

from __future__ import annotations

import functools
from typing import Any

from scheduler_app import socket_flow


class Protocol:
    STATE_OPEN = 3

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.state = self.STATE_OPEN

    def sendMessage(self, payload: bytes, binary: bool = False) -> None:
        raise AssertionError("not used")


class Server:
    async def handle_reply(self, protocol: Any, message: dict) -> None:
        pass


class TLSTransport:
    """Stands for Twisted's TLSMemoryBIOProtocol: encrypts in write(); its socket must not be used."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def getHandle(self) -> Any:
        raise AssertionError("the raw socket under TLS must never be written to")


async def scope_seen_by_app(send: Any) -> dict:
    seen: dict = {}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.update(scope)

    await socket_flow.with_write_flow(app)({"type": "websocket", "path": "/"}, None, send)
    return seen


async def test_daphne_websockets_get_the_extension_and_other_servers_do_not():
    protocol = Protocol(TLSTransport())
    daphne_send = functools.partial(Server().handle_reply, protocol)
    assert isinstance((await scope_seen_by_app(daphne_send))["extensions"][socket_flow.EXTENSION],
                      socket_flow.DaphneWriteFlow)  # fmt: skip

    async def other_send(message: dict) -> None:
        pass

    assert socket_flow.EXTENSION not in (await scope_seen_by_app(other_send)).get("extensions", {})


def test_under_tls_frames_go_through_the_transport_and_no_buffer_is_claimed():
    transport = TLSTransport()
    flow = socket_flow.DaphneWriteFlow(Protocol(transport))
    assert flow.write_frame(b"\x81\x02hi")
    assert transport.written == [b"\x81\x02hi"]
    assert flow.buffered() == 0 and not flow.paused()


def test_a_closed_socket_is_not_written():
    transport = TLSTransport()
    protocol = Protocol(transport)
    protocol.state = 4
    assert not socket_flow.DaphneWriteFlow(protocol).write_frame(b"\x81\x00")
    assert transport.written == []
