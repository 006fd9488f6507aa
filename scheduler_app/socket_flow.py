"""How full a websocket's outgoing buffer is, for servers whose ``send`` never waits.

daphne's ``send`` hands a message to Twisted, which buffers it without limit: a browser that
stops reading would make the web process hold every line published after that. Twisted does
know when a socket's buffer passed its limit (64 KiB): the transport sets its public
``producerPaused`` flag (the HTTP channel stays registered as the upgraded socket's streaming
producer) until the buffer drains. ``with_write_flow`` wraps the ASGI application and, for
websocket connections served by daphne, puts a ``DaphneWriteFlow`` into
``scope["extensions"]["jobscheduler.write_flow"]``; ``live_hub.Viewer`` keeps frames in its own
bounded queue while the flow is paused, so a stalled socket is told it fell behind instead of
growing the process.

Under other servers (uvicorn awaits the socket's drain inside ``send``) or anything unknown,
no extension is added and the viewer's queue bound applies to sends that wait.
"""

from __future__ import annotations

import functools
from typing import Any

EXTENSION = "jobscheduler.write_flow"


class DaphneWriteFlow:
    """The paused flag of the Twisted transport under one daphne websocket protocol."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def paused(self) -> bool:
        transport = getattr(self._protocol, "transport", None)
        return bool(getattr(transport, "producerPaused", False))


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
