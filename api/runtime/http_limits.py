"""The HTTP connection's own limits, below the app: header, idle and body timeouts, header size."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, cast

import msgspec
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from api.problems import PROBLEM_JSON, edge_problem
from api.runtime.settings import Settings


class EdgeLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What one connection may take of a worker before it is closed."""

    header_timeout: float
    """Seconds from the connection's opening, or from a request's first byte after an idle
    keep-alive wait, until its headers are complete: a silent or dribbling client is cut."""
    idle_timeout: float
    """Seconds a keep-alive connection may wait for its next request after an answer."""
    body_timeout: float
    """Seconds from the end of the headers until the whole body has arrived."""
    max_header_bytes: int
    """Bytes of request line and headers at most; past it 431, read no further."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines it lacks: uvicorn only times out a
    keep-alive wait after an answer, and httptools caps no header, so a silent connection
    was held for ever and an unfinished header grew without bound (issue #15).

    One timer per connection, for the phase it is in: the headers (from the opening, or
    from the first byte after an idle wait: `header_timeout`), the body (`body_timeout`),
    or none while the app answers; the idle wait between requests is uvicorn's own
    keep-alive timer, set to `idle_timeout`. A request that has begun is answered 408 (or
    431 for its size) with `Connection: close`; a connection that never sent a byte, or
    whose answer has started, is just closed."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: EdgeLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        # uvicorn arms its keep-alive timer with this attribute after each answer; its
        # Config declares whole seconds, the timer takes any.
        self.timeout_keep_alive = limits.idle_timeout  # type: ignore[assignment]
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = True
        self._read_bytes = 0  # read while this request's headers are unfinished: the bound
        self._header_bytes = 0  # the request's URL and header lines as parsed: the exact size
        self._request_begun = False

    def _arm(self, seconds: float, expired: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: the rest of what the client sends is not parsed
        # Counted by whole reads, so that an unfinished header is cut within one read past
        # the limit: httptools holds a header until it is complete, growing without bound.
        if self._in_headers:
            self._read_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._read_bytes > self.limits.max_header_bytes:
            self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._header_bytes = 0
        if self._deadline is None:
            # The first byte after an idle keep-alive wait: the headers' clock starts now.
            # On a new connection it has run since the opening.
            self._arm(self.limits.header_timeout, self._headers_late)

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        self._in_headers = False
        self._read_bytes = 0
        if self._header_bytes > self.limits.max_header_bytes:
            # Complete within one read: refused before the app is started.
            self._too_large()
            return
        self._arm(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        self._disarm()
        self._in_headers = True
        self._read_bytes = 0
        self._request_begun = False
        super().on_message_complete()

    def _too_large(self) -> None:
        self._refuse(
            431, f"the request line and headers exceed {self.limits.max_header_bytes} bytes"
        )

    def _headers_late(self) -> None:
        self._deadline = None
        if self._request_begun:
            self._refuse(408, f"the headers did not arrive within {self.limits.header_timeout} s")
        else:
            self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        # The app may have answered already without reading the body (a 401, a 413).
        answered = self.cycle.response_started
        self._refuse(
            408, f"the body did not arrive within {self.limits.body_timeout} s", answered=answered
        )

    def _refuse(self, status: int, detail: str, *, answered: bool = False) -> None:
        """Answer `status` unless this request's answer has started, then close."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app reading this body hears a disconnect; whatever it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        if not answered:
            body = edge_problem(status, detail)
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: ",
                PROBLEM_JSON.encode(),
                b"\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\nconnection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
        self.transport.close()


def connections(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's `http` option: a factory of limited connections for these settings.

    A partial rather than a class, to carry the limits; uvicorn only calls it (its type says
    class), and it pickles by reference into each worker process."""
    limits = EdgeLimits(
        header_timeout=settings.header_timeout,
        idle_timeout=settings.idle_timeout,
        body_timeout=settings.body_timeout,
        max_header_bytes=settings.max_header_bytes,
    )
    return cast(
        "type[asyncio.Protocol]", functools.partial(LimitedHttpToolsProtocol, limits=limits)
    )
