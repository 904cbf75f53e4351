"""Service settings: flags over CHECKPOINT_* environment variables over embedded defaults."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from api.runtime.logs import LogFormat
from checkpoint.policy import Policy
from checkpoint.policy_file import default_policy, load_policy
from issuer.keystore import PrivateKeys, SignerBackend, private_keys

ENV_PREFIX = "CHECKPOINT_"
Port = Annotated[int, Meta(ge=1, le=65535)]
Workers = Annotated[int, Meta(ge=1, le=64)]
Seconds = Annotated[float, Meta(gt=0, le=3600)]
HeaderBytes = Annotated[int, Meta(ge=1024, le=1024 * 1024)]
NodeRole = Literal["all", "issue", "verify"]


class RedisAddress(msgspec.Struct, frozen=True, kw_only=True):
    """One Redis URL, or the Sentinels that name the current master of `master`."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "mymaster"


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` as pairs; ValueError naming CHECKPOINT_REDIS_SENTINELS if bad."""
    sentinels = []
    for entry in text.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"CHECKPOINT_REDIS_SENTINELS: {entry.strip()!r} is not host:port "
                "(a comma-separated list, e.g. 10.0.0.1:26379,10.0.0.2:26379)"
            )
        sentinels.append((host.strip("[]"), int(port)))
    return tuple(sentinels)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.5,10.1.0.0/16` as networks; ValueError naming CHECKPOINT_TRUSTED_PROXIES."""
    networks = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as err:
            raise ValueError(
                f"CHECKPOINT_TRUSTED_PROXIES: {entry!r} is not an address or a network "
                "(a comma-separated list, e.g. 10.0.0.5,10.1.0.0/16)"
            ) from err
    return tuple(networks)


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a process needs to know; see `checkpoint serve --help`."""

    data_dir: Path = Path("var")
    """Keys, the SQLite registry and generated files live here."""
    database_url: str | None = None
    """SQLAlchemy URL of the registry; default: SQLite in data_dir."""
    policy: Path | None = None
    """Policy TOML file; default: the shipped Hajj 1448 policy."""
    key_passphrase: str | None = None
    """Encrypts private signing keys on disk when set (the file signer)."""
    signer: SignerBackend = "file"
    """Where private signing keys live: `file` (PEM files in data_dir/keys) or `pkcs11` (an HSM)."""
    pkcs11_module: str | None = None
    """The PKCS#11 library of the HSM, e.g. /usr/lib/softhsm/libsofthsm2.so."""
    pkcs11_token: str | None = None
    """The label of the HSM token holding the keys."""
    pkcs11_pin: str | None = None
    """The token's user PIN."""
    role: NodeRole = "all"
    """What this node does: `verify` (scanners and admins; holds no private key and exposes
    no issuing route), `issue` (portals and admins) or `all` (one embedded node)."""
    host: str = "127.0.0.1"
    port: Port = 8000
    workers: Workers = 1
    redis_url: str | None = None
    """Redis for revocations across machines; without it, an in-process mirror per worker."""
    redis_sentinels: str | None = None
    """Instead of redis_url: Redis Sentinels (host:port, comma-separated) naming the master."""
    redis_master: str = "mymaster"
    """The name the Sentinels monitor the master under."""
    redis_prefix: str = "checkpoint:"
    """Prefix of every Redis key this deployment uses."""
    rate_limit: Annotated[float, Meta(gt=0)] = 200.0
    """Requests per second allowed to one credential, on average."""
    rate_burst: Annotated[float, Meta(ge=1)] = 400.0
    """Requests one credential may send at once before the rate applies (each token of a
    batch counts as one)."""
    auth_failures: Annotated[int, Meta(ge=1)] = 20
    """Failed authentications (no, malformed, unknown or disabled API key) one client address
    may make at once; past them its requests without a known key answer 429 before any
    registry read, and it earns one back every auth_failure_window / auth_failures seconds.
    The address is the connection's peer: behind a proxy, the proxy's."""
    auth_failure_window: Annotated[float, Meta(gt=0)] = 60.0
    """Seconds in which a client address earns back all of its auth_failures."""
    limit_delay: Annotated[float, Meta(ge=0, le=10)] = 1.0
    """Seconds a 429 (a credential over its rate limit, an address over its failure budget)
    is held back, at most until a retry could succeed: a client that waits for its answers
    (HTTP/1.1 does) then sends at most one refused request a second per connection, so a
    flood cannot crowd out the scanners and admins. 0 answers at once."""
    trusted_proxies: str = ""
    """Addresses or networks of reverse proxies, comma-separated (`10.0.0.5,10.1.0.0/16`):
    for a connection from one of them, the client address (of the failure budget) is the
    last X-Forwarded-For hop that is not one of them. Empty: the connection's peer, always."""
    unknown_key_ttl: Annotated[int, Meta(ge=0, le=60)] = 5
    """Seconds an unknown API key is answered 401 from memory, without a registry read; a
    credential created or disabled on any node ends it within a second."""
    log_format: LogFormat = "text"
    """`text` lines, or `json`: one object per line (time, level, logger, message, fields)."""
    idempotency_ttl: Annotated[int, Meta(ge=60, le=30 * 86400)] = 86400
    """Seconds an Idempotency-Key is kept after its first success: a retry with it within
    this time answers the same permits (`Idempotent-Replayed: true`), from then on it is a
    new key. The no-arrival sweep loop forgets the expired ones."""
    webhook_private_targets: bool = False
    """Deliver webhooks to loopback, private and link-local addresses too (a portal on the
    service's own network). Off, such targets are refused: at registration when the URL
    names such an address, at each delivery when its host name resolves to one."""
    access_log: bool = False
    """One log line per request (method, path, route, status, duration, credential, client,
    request id). Off by default: a checkpoint node answers thousands of scans a second."""
    header_timeout: Seconds = 10.0
    """Seconds for a request's line and headers to arrive, from the connection's opening or
    the request's first byte (a silent or dribbling client is cut: 408)."""
    idle_timeout: Seconds = 5.0
    """Seconds a keep-alive connection may wait for its next request."""
    body_timeout: Seconds = 30.0
    """Seconds for a whole request body to arrive after its headers (408)."""
    max_header_bytes: HeaderBytes = 16 * 1024
    """Request line and headers at most, in bytes (431)."""

    def __post_init__(self) -> None:
        # A ValueError here reaches the caller of settings_from_env as a ValidationError.
        if self.redis_url and self.redis_sentinels:
            raise ValueError(
                "CHECKPOINT_REDIS_URL and CHECKPOINT_REDIS_SENTINELS exclude each other: "
                "set one of them"
            )
        if self.redis_sentinels is not None:
            parse_sentinels(self.redis_sentinels)
        parse_networks(self.trusted_proxies)

    @property
    def redis(self) -> RedisAddress | None:
        """Where Redis is, or None (the in-process mode)."""
        if self.redis_sentinels:
            return RedisAddress(
                sentinels=parse_sentinels(self.redis_sentinels), master=self.redis_master
            )
        if self.redis_url:
            return RedisAddress(url=self.redis_url)
        return None

    @property
    def proxy_networks(self) -> tuple[Network, ...]:
        """The networks of `trusted_proxies`."""
        return parse_networks(self.trusted_proxies)

    @property
    def registry_url(self) -> str:
        """The registry URL, SQLite in the data directory unless one is configured."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'registry.sqlite3'}"

    @property
    def signs(self) -> bool:
        """Whether this node issues permits, and so holds private keys."""
        return self.role != "verify"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    def private_keys(self) -> PrivateKeys:
        """Where this node's private signing keys live (files in keys_dir, or the HSM)."""
        passphrase = self.key_passphrase.encode() if self.key_passphrase else None
        return private_keys(
            self.signer,
            self.keys_dir,
            passphrase=passphrase,
            pkcs11_module=self.pkcs11_module,
            pkcs11_token=self.pkcs11_token,
            pkcs11_pin=self.pkcs11_pin,
        )

    def load_policy(self) -> Policy:
        """The configured policy file, or the shipped default."""
        return default_policy() if self.policy is None else load_policy(self.policy)


def settings_from_env(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from CHECKPOINT_* variables, then `overrides` (flags) that are not None.

    Raises msgspec.ValidationError naming the bad variable's field.
    """
    environ = os.environ if environ is None else environ
    fields = {f.name for f in msgspec.structs.fields(Settings)}
    values: dict[str, object] = {}
    for name in fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(values, Settings, strict=False, dec_hook=_decode_path)


def _decode_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, str | os.PathLike):
        return Path(value)
    raise NotImplementedError
