"""The connection limits of `checkpoint serve`, over real sockets against a real server."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.test_serve_e2e import POLICY, Server, _api_key

# Each timeout its own value, so a test sees which one closed the connection.
HEADER_TIMEOUT = 2.5
IDLE_TIMEOUT = 0.8
BODY_TIMEOUT = 1.2
MAX_HEADER_BYTES = 16 * 1024
LATE = 2.0
"""How long past a timeout a busy machine may take to close: the upper bound of each wait."""
EARLY = 0.9
"""The share of a timeout that must pass before the connection may be closed."""


class Edge:
    def __init__(self, server: Server, scanner_key: str) -> None:
        self.server = server
        self.scanner_key = scanner_key
        self.pid = server.process.pid  # one worker: uvicorn serves in this process

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=10)

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("limits")
    policy = root / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    data = root / "data"
    scanner = _api_key(data, policy, "--role", "scanner", "--checkpoint", "gate-a")
    server = Server(
        data,
        policy,
        args=(
            f"--header-timeout={HEADER_TIMEOUT}",
            f"--idle-timeout={IDLE_TIMEOUT}",
            f"--body-timeout={BODY_TIMEOUT}",
            f"--max-header-bytes={MAX_HEADER_BYTES}",
        ),
    )
    try:
        yield Edge(server, scanner)
    finally:
        server.stop()


def _closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Read until the server closes (seconds waited, everything it sent); fails past `limit`."""
    start = time.monotonic()
    received = b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"still open after {limit} s; received {received[:200]!r}")
    except ConnectionResetError:
        pass
    return time.monotonic() - start, received


def _quiet_for(sock: socket.socket, seconds: float) -> None:
    """A client pausing: the server must neither answer nor close meanwhile."""
    readable, _, _ = select.select([sock], [], [], seconds)
    assert not readable, sock.recv(200)


def _answer(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 answer with Content-Length: (status, head, body)."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed within the body"
        body += chunk
    return int(head.split(b" ", 2)[1]), head, body


def _problem(answer: bytes, status: int) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    problem = json.loads(body)
    assert problem["status"] == status
    code: str = problem["code"]
    return code


def _get(path: str = "/health", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: checkpoint\r\n".encode() + extra + b"\r\n"


def _verify(key: str, body: bytes, length: int | None = None) -> bytes:
    return (
        b"POST /v1/verify HTTP/1.1\r\nHost: checkpoint\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\n".encode()
        + f"Content-Length: {len(body) if length is None else length}\r\n\r\n".encode()
    )


def test_a_silent_connection_is_closed_after_the_header_timeout(edge: Edge) -> None:
    with edge.connect() as sock:
        waited, received = _closed_after(sock, HEADER_TIMEOUT + LATE)
    assert waited >= HEADER_TIMEOUT * EARLY
    assert received == b""  # nothing was asked, so nothing is answered


def test_a_header_sent_byte_by_byte_is_cut_at_the_header_timeout(edge: Edge) -> None:
    request = _get(extra=b"X-Padding: " + b"a" * 200 + b"\r\n")
    with edge.connect() as sock:
        start = time.monotonic()
        sent = 0
        # Each byte well within any per-read timeout; the whole far beyond the header's.
        while sent < len(request):
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                break
            sock.sendall(request[sent : sent + 1])
            sent += 1
        assert sent < len(request), "the server waited for the whole dribbled header"
        _, received = _closed_after(sock, LATE)
    assert HEADER_TIMEOUT * EARLY <= time.monotonic() - start <= HEADER_TIMEOUT + LATE
    assert _problem(received, 408) == "request_timeout"


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(edge: Edge) -> None:
    with edge.connect() as sock:
        sock.sendall(_get())
        assert _answer(sock)[0] == 200
        waited, received = _closed_after(sock, HEADER_TIMEOUT)  # shorter than the header's
    assert waited >= IDLE_TIMEOUT * EARLY
    assert received == b""


def test_an_unfinished_huge_header_does_not_grow_the_server(edge: Edge) -> None:
    """Three connections each send an endless header: the server cuts each at the limit,
    so its memory stays where it was (unlimited, 3 x 32 MiB would be held)."""
    chunk = b"a" * 65536
    cap = 32 * 1024 * 1024
    socks = [edge.connect() for _ in range(3)]
    before = peak = edge.rss_bytes()
    try:
        for sock in socks:
            sock.sendall(_get()[:-2] + b"X-Huge: ")
            sock.setblocking(False)
        sent = dict.fromkeys(socks, 0)
        open_ = set(socks)
        while open_ and peak - before < 64 * 1024 * 1024:
            _, writable, _ = select.select([], list(open_), [], 5)
            assert writable, "the server stopped reading but did not close"
            for sock in writable:
                try:
                    sent[sock] += sock.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    open_.discard(sock)
                    continue
                assert sent[sock] < cap, "a 32 MiB header was read to its end"
            peak = max(peak, edge.rss_bytes())
        peak = max(peak, edge.rss_bytes())
        assert not open_
        assert peak - before < 16 * 1024 * 1024, f"RSS grew by {(peak - before) >> 20} MiB"
    finally:
        for sock in socks:
            sock.close()


def test_a_header_just_over_the_limit_is_answered_431(edge: Edge) -> None:
    padding = b"X-Padding: " + b"a" * MAX_HEADER_BYTES + b"\r\n"
    # Unfinished (the server must not wait for the end), and finished within one read.
    for request in (_get()[:-2] + padding[:-2], _get(extra=padding)):
        with edge.connect() as sock:
            sock.sendall(request)
            _, received = _closed_after(sock, LATE)
        assert _problem(received, 431) == "headers_too_large"


def test_a_header_just_under_the_limit_is_answered(edge: Edge) -> None:
    request = _get()
    padding = MAX_HEADER_BYTES - len(request) - 64
    with edge.connect() as sock:
        sock.sendall(_get(extra=b"X-Padding: " + b"a" * padding + b"\r\n"))
        status, _, body = _answer(sock)
    assert status == 200, body


def test_a_body_that_stops_midway_is_closed_after_the_body_timeout(edge: Edge) -> None:
    body = json.dumps({"token": "x" * 80}).encode()
    with edge.connect() as sock:
        sock.sendall(_verify(edge.scanner_key, body) + body[:10])
        waited, received = _closed_after(sock, BODY_TIMEOUT + LATE)
    assert waited >= BODY_TIMEOUT * EARLY
    assert _problem(received, 408) == "request_timeout"


def test_a_stalled_body_after_an_early_answer_gets_no_second_answer(edge: Edge) -> None:
    """Without a key the app answers 401 before reading the body: the connection is then
    closed when the body is late, and the 401 stays the only answer."""
    with edge.connect() as sock:
        sock.sendall(_verify("", b"", length=100) + b'{"tok')
        _, received = _closed_after(sock, BODY_TIMEOUT + LATE)
    assert received.count(b"HTTP/1.1 ") == 1
    assert received.startswith(b"HTTP/1.1 401 ")


def test_normal_requests_on_one_connection(edge: Edge) -> None:
    body = json.dumps({"token": "not-a-token"}).encode()
    with edge.connect() as sock:
        for _ in range(3):
            sock.sendall(_get())
            assert _answer(sock)[0] == 200
            sock.sendall(_verify(edge.scanner_key, body) + body)
            status, _, answer = _answer(sock)
            assert status == 200, answer
            assert json.loads(answer)["outcome"] == "INVALID"


def test_a_slow_client_within_the_limits_is_answered(edge: Edge) -> None:
    """Headers and bodies in pieces, pauses under the idle timeout between requests: the
    connection outlives every timeout, as each request's clock starts at its first byte."""
    body = json.dumps({"token": "not-a-token"}).encode()
    request = _verify(edge.scanner_key, body)
    start = time.monotonic()
    with edge.connect() as sock:
        for _ in range(3):
            for piece in (request[:20], request[20:60]):
                sock.sendall(piece)
                _quiet_for(sock, HEADER_TIMEOUT / 5)
            sock.sendall(request[60:] + body[:5])
            _quiet_for(sock, BODY_TIMEOUT / 3)
            sock.sendall(body[5:])
            status, _, answer = _answer(sock)
            assert status == 200, answer
            _quiet_for(sock, IDLE_TIMEOUT / 2)
    assert time.monotonic() - start > HEADER_TIMEOUT + BODY_TIMEOUT


def test_a_bad_limit_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "api.cli",
            "--data-dir",
            str(tmp_path),
            "serve",
            "--header-timeout=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "header_timeout" in result.stderr
