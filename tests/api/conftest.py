"""Fixtures of the HTTP API tests: an app on a temporary data directory, a clock the test
moves by hand, and API keys of each role created straight in the app's registry.

The background loops of `api.runtime.services` (revocation sync every second, audit flush,
webhook deliveries) are pushed far into the future so that no test depends on them:
freshness is confirmed when the app starts and whenever a change is announced, audit rows
are flushed and webhooks delivered explicitly.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

import api.runtime.services
from api.app import create_app
from api.routes import ROUTERS
from api.runtime.services import Services
from api.runtime.settings import Settings
from checkpoint.model import Decision, Outcome, PermitSummary
from checkpoint.policy_file import default_policy
from issuer.admission import MAKKAH
from issuer.registration import register_establishment
from issuer.store.audit import audit_entries
from issuer.store.credentials import Credential, Role, create_credential

T = TypeVar("T")

POLICY = default_policy()
RIYADH = dt.timezone(dt.timedelta(hours=3))
NOW = int(dt.datetime(2027, 4, 20, 12, 0, tzinfo=RIYADH).timestamp())
"""2027-04-20 12:00 Riyadh: inside the Hajj 1448 season (2027-04-08 .. 2027-05-21)."""
STALENESS = POLICY.revocation_staleness
CHECKPOINT = "shumaisi"
IQAMA = "2123456705"
IQAMA_2 = "2123456713"
IQAMA_3 = "2123456721"
NATIONAL_ID = "1012345607"
PROBLEM_JSON = "application/problem+json"
MUQEEM_ESTABLISHMENT = "EST-7"
OTHER_ESTABLISHMENT = "EST-8"


@dataclass
class FakeClock:
    """The service's clock: Unix seconds that only the test moves."""

    now: int = NOW

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


class Api:
    """A started app with its test client, clock and helpers."""

    def __init__(self, client: TestClient[Litestar], clock: FakeClock) -> None:
        self.client = client
        self.clock = clock

    @property
    def services(self) -> Services:
        services: Services = self.client.app.state.services
        return services

    def run(self, function: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Await `function(*args, **kwargs)` on the app's event loop."""
        return self.client.blocking_portal.call(functools.partial(function, *args, **kwargs))

    def credential(
        self,
        role: Role,
        *,
        channels: Sequence[str] = (),
        checkpoint: str | None = None,
        establishment: str | None = None,
    ) -> tuple[Credential, str]:
        """A new credential and its API key."""
        return self.run(
            create_credential,
            self.services.registry,
            role=role,
            channels=channels,
            checkpoint=checkpoint,
            created_at=self.clock.now,
            label=f"test {role}",
            establishment=establishment,
        )

    def key(
        self,
        role: Role,
        *,
        channels: Sequence[str] = (),
        checkpoint: str | None = None,
        establishment: str | None = None,
    ) -> str:
        """The API key of a new credential."""
        return self.credential(
            role, channels=channels, checkpoint=checkpoint, establishment=establishment
        )[1]

    def register_establishment(self, establishment_id: str, city: str = MAKKAH) -> None:
        """Register a Muqeem establishment (Muqeem permits name a registered one)."""
        self.run(
            register_establishment,
            self.services.registry,
            establishment_id=establishment_id,
            channel="muqeem",
            name=f"Establishment {establishment_id}",
            city=city,
            company_class=None,
            rules=POLICY.rules,
            actor="test",
            at=self.clock.now,
        )

    def issue(self, key: str, **fields: Any) -> dict[str, Any]:
        """Issue one permit through the API (201 asserted); its PermitView as JSON."""
        response = self.client.post("/v1/permits", json=permit_body(**fields), headers=auth(key))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def verify(self, key: str, token: str) -> dict[str, Any]:
        """The decision for `token` (HTTP 200 asserted)."""
        response = self.client.post("/v1/verify", json={"token": token}, headers=auth(key))
        assert response.status_code == 200, response.text
        decision: dict[str, Any] = response.json()
        return decision

    def audit_entries(self, action: str | None = None) -> list[Any]:
        """Flush the buffered decision rows, then read the audit log."""
        self.run(self.services.flush_audit)
        return self.run(audit_entries, self.services.registry, action=action, limit=1000)


def auth(key: str) -> dict[str, str]:
    """The Authorization header for an API key."""
    return {"Authorization": f"Bearer {key}"}


def utc(at: int) -> str:
    """A Unix time as the API answers it where requests take RFC 3339: `...Z`."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def riyadh(day: int, month: int = 4, hour: int = 0) -> str:
    """An RFC 3339 time in 2027, Riyadh time."""
    return dt.datetime(2027, month, day, hour, tzinfo=RIYADH).isoformat()


SUMMARY = PermitSummary("0.1", "****6705", "domestic_worker", 1, NOW - 86400, NOW + 86400, 0)


def decision(
    outcome: Outcome, code: str, now: int, permit: PermitSummary | None = SUMMARY
) -> Decision:
    """A decision at CHECKPOINT on an authentic permit (None: a token that is none, such as
    junk), as the verifier would make it (for the audit queue)."""
    return Decision(
        outcome=outcome,
        code=code,
        message_en="",
        message_ar="",
        checkpoint=CHECKPOINT,
        checked_at=now,
        policy_version="test",
        permit=permit,
    )


def permit_body(**fields: Any) -> dict[str, Any]:
    """An issue request for a domestic worker, valid at NOW, with `fields` replaced."""
    body: dict[str, Any] = {
        "holder": IQAMA,
        "category": "domestic_worker",
        "sponsor": NATIONAL_ID,
        "season": 1,
        "not_before": riyadh(10),
        "expires": riyadh(20, month=5),
    }
    body.update(fields)
    return body


def muqeem_body(**fields: Any) -> dict[str, Any]:
    """An issue request for an employee of establishment EST-7 (Muqeem channel)."""
    body = permit_body(category="establishment_employee", establishment=MUQEEM_ESTABLISHMENT)
    del body["sponsor"]
    body.update(fields)
    return body


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem with this status and stable code; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == f"urn:checkpoint:problem:{code}"
    return body


def error_fields(body: dict[str, Any]) -> str:
    """Every field key and message of a 422 `errors` list, as one string to search."""
    errors = body.get("errors") or []
    return " ".join(f"{e.get('key')} {e.get('message')}" for e in errors)


@contextmanager
def running(settings: Settings, clock: FakeClock) -> Iterator[Api]:
    """An app started on `settings` (its lifespan runs on entry and on exit)."""
    with TestClient(create_app(settings, clock=lambda: clock.now)) as client:
        yield Api(client, clock)


@pytest.fixture(autouse=True)
def no_background_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never depend on the background loops' wall-clock timing."""
    monkeypatch.setattr(api.runtime.services, "SYNC_INTERVAL", 3600.0)
    monkeypatch.setattr(api.runtime.services, "AUDIT_FLUSH_INTERVAL", 3600.0)
    monkeypatch.setattr(api.runtime.services, "DELIVERY_INTERVAL", 3600.0)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> Iterator[Api]:
    """The started service, at NOW."""
    with running(settings, clock) as started:
        yield started


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One started service for a whole module of tests that do not depend on each other's
    state (the per-request guard and body checks): starting an app takes a while."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api.runtime.services, "SYNC_INTERVAL", 3600.0)
        patch.setattr(api.runtime.services, "AUDIT_FLUSH_INTERVAL", 3600.0)
        patch.setattr(api.runtime.services, "DELIVERY_INTERVAL", 3600.0)
        # The tests share one client address: none may use up the others' failure budget,
        # nor wait for a held-back 429.
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("shared"), auth_failures=10**6, limit_delay=0
        )
        with running(settings, FakeClock()) as started:
            yield started


@pytest.fixture
def client(app: Api) -> TestClient[Litestar]:
    return app.client


@pytest.fixture
def scanner_key(app: Api) -> str:
    return app.key("scanner", checkpoint=CHECKPOINT)


@pytest.fixture
def issuer_key(app: Api) -> str:
    return app.key("issuer", channels=["absher"])


@pytest.fixture
def muqeem_issuer_key(app: Api) -> str:
    """A Muqeem issuer; establishments EST-7 and EST-8 are registered in Makkah."""
    app.register_establishment(MUQEEM_ESTABLISHMENT)
    app.register_establishment(OTHER_ESTABLISHMENT)
    return app.key("issuer", channels=["muqeem"])


@pytest.fixture
def admin_key(app: Api) -> str:
    return app.key("admin")


@pytest.fixture
def permit(app: Api, issuer_key: str) -> dict[str, Any]:
    """A domestic-worker permit issued through Absher, valid at NOW."""
    return app.issue(issuer_key)


def mounted_handlers() -> Iterator[tuple[str, HTTPRouteHandler]]:
    """(full path, handler) of every handler the app's routers mount (Litestar's automatic
    OPTIONS handlers left out)."""
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, HTTPRoute):
                for handler in route.route_handlers:
                    if handler.fn.__name__ != "options_handler":
                        yield route.path, handler


def mounted_routes(handlers: Sequence[HTTPRouteHandler] | None = None) -> set[tuple[str, str]]:
    """(method, full path) of every mounted route, or of these handlers' routes only."""
    wanted = None if handlers is None else {h.fn for h in handlers}
    return {
        (method, path)
        for path, handler in mounted_handlers()
        if wanted is None or handler.fn in wanted
        for method in handler.http_methods
    }
