"""A private `redis-server` for tests, started on a free port and stopped by its pid; also a
replica of one (`--replicaof`) and a Sentinel watching one (`redis-server --sentinel`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

START_ATTEMPTS = 200
START_POLL_SECONDS = 0.02


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process of our own: tests may kill, freeze or flush it."""

    def __init__(self, directory: Path, replica_of: RedisServer | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        command = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            # A replica synchronises at once, not after the 5 s wait for other replicas.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        return command

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        try:
            for _ in range(START_ATTEMPTS):
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(START_POLL_SECONDS)  # waiting for a child to listen
        finally:
            client.close()
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def replicating(self) -> bool:
        """Whether this replica's link to its master is up (it has the master's data)."""
        with self.client() as client:
            status: object = client.info("replication").get("master_link_status")
        return status == "up"

    def client(self) -> redis.Redis:
        """A synchronous client with short timeouts, for test set-up and assertions."""
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def _signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)

    def kill(self) -> None:
        """kill -9: everything in memory is gone."""
        self._signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class RedisSentinel(RedisServer):
    """A Sentinel of our own watching `master` under `name`, alone (quorum 1), quick to act:
    a master silent for `down_after_ms` is failed over to its replica."""

    def __init__(
        self,
        directory: Path,
        master: RedisServer,
        name: str = "mymaster",
        down_after_ms: int = 1000,
    ) -> None:
        super().__init__(directory)
        self.master = master
        self.name = name
        self.down_after_ms = down_after_ms

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        # Sentinel rewrites its configuration file, so it is written fresh into our directory.
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.name} {self.down_after_ms * 2}\n"
            f"sentinel parallel-syncs {self.name} 1\n",
            encoding="utf-8",
        )
        return ["redis-server", str(config), "--sentinel"]

    def master_port(self) -> int:
        """The port of the server this Sentinel names master now."""
        with self.client() as client:
            _host, port = client.sentinel_get_master_addr_by_name(self.name)
            return int(port)

    def knows_replicas(self) -> int:
        """How many replicas this Sentinel sees up (a failover needs one)."""
        with self.client() as client:
            replicas = client.sentinel_slaves(self.name)
        return sum(
            1
            for r in replicas
            if not r["is_sdown"] and not r["is_odown"] and r.get("master-link-status") == "ok"
        )
