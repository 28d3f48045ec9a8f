"""What ``tintdb run`` does before a request reaches the app: connection-level limits.

uvicorn parses HTTP/1.1 with h11 and times out nothing but idle keep-alive connections:
a client that opens a connection and sends nothing, or trickles its request head a
byte at a time, holds it forever, and a request line longer than h11's buffer ends in
a reset connection rather than an answer. ``GuardedH11Protocol`` is uvicorn's own h11
protocol with three additions, each answered in JSON like every other error:

* the request head (request line and headers) must arrive within ``header_timeout``
  seconds of the connection opening or of the previous response (408 if some of it
  came, a silent close if none did);
* a request line over ``MAX_REQUEST_LINE`` bytes is answered 414, a head over
  ``MAX_HEAD`` bytes 431;
* after such an early answer the connection is half-closed and what the client still
  sends is read and dropped for a moment, so that the client reads the answer instead
  of a reset (closing a socket with unread input sends a TCP reset).

Body read timeouts and the bound on concurrent requests live in the app's middleware
(``server._Guard``), where the request is known.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "H11_BUFFER",
    "MAX_HEAD",
    "MAX_REQUEST_LINE",
    "GuardedH11Protocol",
    "guarded_protocol",
]

DEFAULT_HEADER_TIMEOUT = 10.0
MAX_REQUEST_LINE = 8 * 1024
MAX_HEAD = 64 * 1024
# h11's own limit on a request head must lie beyond ours, so that ours answers first.
H11_BUFFER = 2 * MAX_HEAD
# How long the input of a connection answered early is read and dropped before closing.
_LINGER = 2.0

_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


def _raw_response(status: int, message: str) -> bytes:
    body = orjson.dumps({"error": "ChromaError", "message": message})
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
    )
    return head + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline and size limits on the request head."""

    header_timeout = DEFAULT_HEADER_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head = bytearray()  # the request head so far, while one is awaited
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._arm()

    def _awaiting_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # answered already: drop the rest
        if self._awaiting_head():
            self._arm()
            self._head += data
            if self._check_head():
                return
        super().data_received(data)
        if not self._awaiting_head():
            self._head.clear()
            self._disarm()

    def _check_head(self) -> bool:
        """Answer a request line or head over its limit; True when answered."""
        head = bytes(self._head[: MAX_HEAD + 4])
        line_end = head.find(b"\n")
        if (line_end < 0 and len(head) > MAX_REQUEST_LINE) or line_end > MAX_REQUEST_LINE:
            self._answer(
                414,
                f"The request line is longer than {MAX_REQUEST_LINE} bytes: "
                "send long values in the request body",
            )
            return True
        if head.find(b"\r\n\r\n") < 0 and head.find(b"\n\n") < 0 and len(head) > MAX_HEAD:
            self._answer(431, f"The request headers are larger than {MAX_HEAD} bytes")
            return True
        return False

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # still answering the previous request
        if not self._head:
            self.transport.close()  # an idle connection: nothing to answer
            return
        self._answer(
            408, f"The request headers did not arrive within {self.header_timeout:g} seconds"
        )

    def _answer(self, status: int, message: str) -> None:
        """Answer without h11 (whose state may not allow it yet) and close after a while."""
        self._disarm()
        self._head.clear()
        self._lingering = True
        self.transport.write(_raw_response(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded_protocol(header_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class for one server, its header deadline fixed."""
    attributes: dict[str, Any] = {"header_timeout": header_timeout}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), attributes)
