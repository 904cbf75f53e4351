"""A TCP proxy for outage tests: passes, refuses, resets or black-holes connections."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Literal

from tests.redis_server import free_port

Mode = Literal["pass", "refuse", "reset", "blackhole"]


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`, on its own event loop in a thread of its own.

    `pass`: bytes flow both ways. `refuse`: nothing listens on the port (connect is refused)
    and open connections are reset. `reset`: connections are accepted, then reset, and so
    are open ones. `blackhole`: a partition: new connections are accepted and held open,
    open ones stay open, and nothing passes either way. Leaving `blackhole` resets every
    connection it held.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode: Mode = "pass"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *_: object) -> None:
        self._call(self._shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; every connection open until now is reset."""
        self._call(self._switch(mode))

    def _call(self, coroutine: object) -> None:
        assert asyncio.iscoroutine(coroutine)
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def _shut(self) -> None:
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _switch(self, mode: Mode) -> None:
        if mode == "blackhole" and self.mode == "pass":
            self.mode = mode  # open connections stay open; `_pipe` passes nothing more
            return
        await self._shut()
        self.mode = mode
        if mode != "refuse":
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _reset(writer)
            return
        self._open.add(writer)
        if self.mode == "blackhole":
            return  # held open until the mode changes; nothing is read or written
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._open.add(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )
        for end in (writer, upstream_writer):
            self._open.discard(end)
            end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "blackhole":
                    continue  # swallowed: the other end waits for an answer that never comes
                writer.write(data)
                await writer.drain()
        finally:
            if not writer.is_closing():
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed server or a firewall would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()
