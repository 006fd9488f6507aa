"""A websocket's outgoing side under daphne: how full its buffer is, and a direct frame write.

daphne's ``send`` hands a message to Twisted, which buffers it without limit: a browser that
stops reading would make the web process hold every line published after that. The Twisted
transport under a daphne websocket knows how many bytes it holds unsent (its ``dataBuffer``
from ``offset``, plus the chunks written since, ``_tempDataLen``). ``with_write_flow`` wraps
the ASGI application and, for websocket connections served by daphne, puts a
``DaphneWriteFlow`` into ``scope["extensions"]["jobscheduler.write_flow"]``; while it reports
more than the transport's ``bufferSize`` (64 KiB), ``live_hub.Viewer`` keeps frames in its own
bounded queue, so a stalled socket is told it fell behind instead of growing the process.

(The transport's ``producerPaused`` flag looked like the public way to learn this, but it
stays set after the upgrade from HTTP, whose channel is the registered producer: every socket
read as paused.)

The same object writes an already encoded websocket frame straight to the transport
(``write_frame``). A live-log frame goes to every viewer of a stream as the same bytes (server
frames are unmasked), so the fan-out encodes it once; going through ASGI ``send`` instead
costs, per socket and frame, channels' and daphne's wrappers, a UTF-8 encoding and
autobahn's framing: most of the web process's CPU with 100 viewers.

Under other servers (uvicorn awaits the socket's drain inside ``send``) or anything unknown,
no extension is added: the viewer sends through ASGI and its queue bound applies to sends
that wait.
"""

from __future__ import annotations

import functools
import socket
from typing import Any

EXTENSION = "jobscheduler.write_flow"


#: The kernel's send buffer for a websocket (it autotunes up to 4 MiB on Linux): a socket whose
#: reader stalled is noticed after this much plus Twisted's 64 KiB, not after megabytes. Log
#: streams are far below what it allows (256 KiB per round trip).
SEND_BUFFER = 256 * 1024
#: Unsent bytes above which a socket counts as full, when the transport does not say (Twisted's default).
DEFAULT_HIGH_WATER = 65536


class DaphneWriteFlow:
    """The Twisted transport under one daphne (autobahn) websocket protocol."""

    __slots__ = ("_plain", "_protocol")

    def __init__(self, protocol: Any) -> None:
        from twisted.internet import tcp

        self._protocol = protocol
        # Only a plain TCP connection may be written to directly: under daphne's own TLS
        # (``-e ssl:...``) the transport encrypts, and the socket below it must not see our bytes.
        self._plain = isinstance(protocol.transport, tcp.Connection)
        if self._plain:
            try:
                protocol.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:  # already closed
                pass

    def buffered(self) -> int:
        """Bytes the transport holds unsent; 0 when it cannot tell (TLS: no backpressure then)."""
        transport: Any = getattr(self._protocol, "transport", None)
        if not self._plain or transport is None:
            return 0
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    def write_frame(self, wire: bytes) -> bool:
        """Write one complete websocket frame; False if the socket is no longer open."""
        protocol = self._protocol
        transport = protocol.transport
        if transport is None or protocol.state != protocol.STATE_OPEN:
            return False
        # Whole frames only, in call order: autobahn writes its own frames (pings, close) the
        # same way, so they can never interleave inside one of ours.
        if self._plain and self.buffered() == 0:
            # Nothing queued before it: send now, as asyncio's transports do. Twisted's write()
            # would register the socket for writing and send on the next loop turn, two more
            # system calls per frame and socket.
            try:
                sent = transport.getHandle().send(wire)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # a dead socket: transport.write() below finds out and closes it properly
            if sent == len(wire):
                return True
            wire = wire[sent:]
        transport.write(wire)
        return True

    def paused(self) -> bool:
        transport = getattr(self._protocol, "transport", None)
        return self.buffered() > getattr(transport, "bufferSize", DEFAULT_HIGH_WATER)


def _daphne_protocol(send: Any) -> Any:
    """daphne passes ``partial(server.handle_reply, protocol)`` as ``send``; anything else: None."""
    if isinstance(send, functools.partial) and send.args and getattr(send.func, "__name__", "") == "handle_reply":
        protocol = send.args[0]
        if hasattr(protocol, "transport") and hasattr(protocol, "sendMessage"):
            return protocol
    return None


def with_write_flow(application: Any) -> Any:
    """ASGI middleware adding the write-flow extension to websocket scopes served by daphne."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") == "websocket":
            protocol = _daphne_protocol(send)
            if protocol is not None:
                extensions = {**(scope.get("extensions") or {}), EXTENSION: DaphneWriteFlow(protocol)}
                scope = {**scope, "extensions": extensions}
        return await application(scope, receive, send)

    return app
