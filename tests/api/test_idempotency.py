"""Idempotency-Key over HTTP (draft-ietf-httpapi-idempotency-key-header, issue #14): the key
as an RFC 8941 sf-string, the replay marker, 422 for another body, the published expiry, a
retry after a lost answer, and one permit for concurrent requests on SQLite and PostgreSQL."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from api.routes.access import IDEMPOTENCY_KEY_PATTERN, parse_idempotency_key
from api.runtime.settings import Settings
from api.runtime.sweep import sweep_once
from issuer.store import idempotency
from issuer.store.registry import lock_key
from issuer.store.schema import idempotency_keys, permits
from tests.api.conftest import (
    IQAMA_2,
    Api,
    FakeClock,
    assert_problem,
    auth,
    error_fields,
    permit_body,
    running,
)
from tests.api.test_fleet import _resident as resident
from tests.postgres import throwaway_database_sync

REPLAYED = "Idempotent-Replayed"
TTL = 86_400
"""The default lifetime of a key (CHECKPOINT_IDEMPOTENCY_TTL)."""
HEADER = Annotated[str, msgspec.Meta(pattern=IDEMPOTENCY_KEY_PATTERN)]
"""The constraint Litestar checks the header against."""


def post(app: Api, key: str, header: str | bytes | None, **fields: Any) -> httpx.Response:
    headers: dict[str, Any] = auth(key)
    if header is not None:
        headers["Idempotency-Key"] = header
    return app.client.post("/v1/permits", json=permit_body(**fields), headers=headers)


def count(app: Api, table: Any) -> int:
    async def counted() -> int:
        async with app.services.registry.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())

    return app.run(counted)


def stored_keys(app: Api) -> list[str]:
    async def keys() -> list[str]:
        async with app.services.registry.read() as conn:
            return list((await conn.execute(select(idempotency_keys.c.key))).scalars())

    return app.run(keys)


# --- the header's syntax --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ('"booking-0001"', "booking-0001"),
        ("booking-0001", "booking-0001"),
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ('"with space"', "with space"),
        ('"a\\"quoted\\" key"', 'a"quoted" key'),
        ('"back\\\\slash"', "back\\slash"),
        ('  "spaced-out"  ', "spaced-out"),
        ('"' + "x" * 128 + '"', "x" * 128),
        ('"' + '\\"' * 128 + '"', '"' * 128),  # 128 escaped characters: 258 on the wire
        ("y" * 128, "y" * 128),
        ('"12345678"', "12345678"),
        ("12345678", "12345678"),
    ],
)
def test_a_valid_header_names_its_key(header: str, key: str) -> None:
    assert msgspec.convert(header, HEADER) == header
    assert parse_idempotency_key(header) == key


@pytest.mark.parametrize(
    "header",
    [
        '"1234567"',  # 7 characters
        "1234567",
        '"' + "x" * 129 + '"',  # 129 characters
        "y" * 129,
        '"' + '\\"' * 129 + '"',  # 129 once unescaped
        '""',
        "",
        '"abcdefgh\\n"',  # an escape RFC 8941 does not have
        '"abcdefgh\\"',  # the closing quote escaped: unterminated
        '"abcdefgh',
        'abcdefgh"',
        '"abcdefgh"x',
        '"abcdefgh";expires=1',  # an Item with a parameter
        '"abcdefgh", "ijklmnop"',  # two keys (a repeated header, joined)
        "abcdefgh, ijklmnop",
        "bare key",  # a bare key has no space, quote or backslash
        'bare"quote',
        "bare\\slash",
        '"abcd\tefgh"',  # a control character
        '"abcdéfgh"',  # not ASCII
        '"abcdefgh"\n',  # a trailing newline
        "abcdefgh\n",
    ],
)
def test_an_invalid_header_is_refused(header: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(header, HEADER)


def test_the_quoted_and_the_bare_form_are_one_key(app: Api, issuer_key: str) -> None:
    first = post(app, issuer_key, "booking-0001")
    again = post(app, issuer_key, '"booking-0001"')
    assert first.status_code == again.status_code == 201
    assert again.json()["permit_id"] == first.json()["permit_id"]
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert stored_keys(app) == ["booking-0001"]


def test_an_escaped_key_is_stored_unescaped_and_replays(app: Api, issuer_key: str) -> None:
    header = '"order \\"42\\" \\\\ 2027"'
    first = post(app, issuer_key, header)
    again = post(app, issuer_key, header)
    assert again.json()["permit_id"] == first.json()["permit_id"]
    assert again.headers[REPLAYED] == "true"
    assert stored_keys(app) == ['order "42" \\ 2027']
    # One character more or less is another key: a new request, not a reuse.
    other = post(app, issuer_key, '"order \\"42\\" \\\\ 2028"', holder=IQAMA_2)
    assert other.status_code == 201
    assert REPLAYED not in other.headers


@pytest.mark.parametrize(
    "header",
    [
        '"1234567"',
        "y" * 129,
        '"' + "x" * 129 + '"',
        '"abcdefgh\\n"',
        '"abcdefgh";a=1',
        "bare key",
        '"abcd\tefgh"',
        b'"abcd\xe9fgh"',
    ],
)
def test_an_invalid_header_is_a_422_naming_it_and_issues_nothing(
    app: Api, issuer_key: str, header: str | bytes
) -> None:
    response = post(app, issuer_key, header)
    assert "idempotency_key" in error_fields(assert_problem(response, 422, "invalid_body"))
    assert count(app, permits) == 0


def test_two_idempotency_keys_are_refused(app: Api, issuer_key: str) -> None:
    headers = [*auth(issuer_key).items()]
    headers += [("Idempotency-Key", '"abcdefgh"'), ("Idempotency-Key", '"abcdefgh"')]
    response = app.client.post("/v1/permits", json=permit_body(), headers=headers)
    assert "idempotency_key" in error_fields(assert_problem(response, 422, "invalid_body"))


@pytest.mark.parametrize("length", [8, 128])
def test_the_shortest_and_longest_keys_issue_and_replay(
    app: Api, issuer_key: str, length: int
) -> None:
    header = '"' + "k" * length + '"'
    first = post(app, issuer_key, header)
    assert first.status_code == 201, first.text
    assert post(app, issuer_key, "k" * length).headers[REPLAYED] == "true"


# --- replays and another body -----------------------------------------------------------------


def test_the_replay_marker_is_on_replays_only(app: Api, issuer_key: str) -> None:
    plain = post(app, issuer_key, None, holder=IQAMA_2)
    first = post(app, issuer_key, '"replay-0001"')
    again = post(app, issuer_key, '"replay-0001"')
    assert [r.status_code for r in (plain, first, again)] == [201, 201, 201]
    assert REPLAYED not in plain.headers
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    assert count(app, permits) == 2


def test_a_batch_replay_is_marked(app: Api, issuer_key: str) -> None:
    body = {"permits": [permit_body(), permit_body(holder=IQAMA_2)]}
    headers = auth(issuer_key) | {"Idempotency-Key": '"batch-0001"'}
    first = app.client.post("/v1/permits/batch", json=body, headers=headers)
    again = app.client.post("/v1/permits/batch", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    assert count(app, permits) == 2


def test_another_body_under_a_key_is_422_and_issues_nothing(app: Api, issuer_key: str) -> None:
    assert post(app, issuer_key, '"order-0002"').status_code == 201
    other = post(app, issuer_key, '"order-0002"', holder=IQAMA_2)
    problem = assert_problem(other, 422, "idempotency_key_reused")
    assert problem["title_ar"]
    assert "order-0002" in problem["detail"]
    assert REPLAYED not in other.headers
    assert count(app, permits) == 1
    # The first body still replays.
    assert post(app, issuer_key, "order-0002").headers[REPLAYED] == "true"


def test_a_refusal_is_not_kept(app: Api, issuer_key: str) -> None:
    refused = post(app, issuer_key, '"order-0003"', holder="2123456700")
    assert_problem(refused, 422, "invalid_iqama")
    assert stored_keys(app) == []
    fixed = post(app, issuer_key, '"order-0003"')
    assert fixed.status_code == 201
    assert REPLAYED not in fixed.headers


# --- expiry -----------------------------------------------------------------------------------


@pytest.fixture
def short_lived(tmp_path: Path, clock: FakeClock) -> Iterator[Api]:
    """The service with keys kept one hour."""
    with running(Settings(data_dir=tmp_path, idempotency_ttl=3600), clock) as started:
        yield started


def test_a_key_replays_until_one_second_before_its_expiry(app: Api, issuer_key: str) -> None:
    first = post(app, issuer_key, '"expiry-0001"')
    app.clock.advance(TTL - 1)
    again = post(app, issuer_key, '"expiry-0001"')
    assert again.headers[REPLAYED] == "true"
    assert again.json()["permit_id"] == first.json()["permit_id"]
    # Another body is still refused at that second.
    assert_problem(
        post(app, issuer_key, '"expiry-0001"', holder=IQAMA_2), 422, "idempotency_key_reused"
    )


def test_at_its_expiry_a_key_is_new(app: Api, issuer_key: str) -> None:
    first = post(app, issuer_key, '"expiry-0002"')
    app.clock.advance(TTL)
    # The same body is a new request: checked again (one active permit per holder), not replayed.
    same = post(app, issuer_key, '"expiry-0002"')
    assert_problem(same, 422, "permit_exists")
    assert REPLAYED not in same.headers
    other = post(app, issuer_key, '"expiry-0002"', holder=IQAMA_2)
    assert other.status_code == 201, other.text
    assert REPLAYED not in other.headers
    assert other.json()["permit_id"] != first.json()["permit_id"]
    # ...and the new success is kept for a new lifetime.
    app.clock.advance(TTL - 1)
    assert post(app, issuer_key, '"expiry-0002"', holder=IQAMA_2).headers[REPLAYED] == "true"


def test_the_lifetime_is_a_setting(short_lived: Api) -> None:
    key = short_lived.key("issuer", channels=["absher"])
    post(short_lived, key, '"short-0001"')
    short_lived.clock.advance(3599)
    assert post(short_lived, key, '"short-0001"').headers[REPLAYED] == "true"
    short_lived.clock.advance(1)
    assert post(short_lived, key, '"short-0001"', holder=IQAMA_2).status_code == 201


def test_the_sweep_forgets_expired_keys_only(app: Api, issuer_key: str) -> None:
    post(app, issuer_key, '"sweep-0001"')
    app.clock.advance(60)
    post(app, issuer_key, '"sweep-0002"', holder=IQAMA_2)
    app.clock.advance(TTL - 60)
    app.run(sweep_once, app.services)
    assert stored_keys(app) == ["sweep-0002"]
    app.clock.advance(60)
    app.run(sweep_once, app.services)
    assert stored_keys(app) == []
    assert count(app, permits) == 2


# --- the answer lost after the commit ---------------------------------------------------------


def test_a_retry_after_a_lost_answer_replays_the_committed_permit(
    app: Api, issuer_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The COMMIT reached the database, the acknowledgement did not: the caller hears 503
    outcome unknown, retries with the same key, and gets the permit that was committed."""
    dialect = app.services.registry.engine.sync_engine.dialect
    commit = dialect.do_commit

    def committed_then_lost(dbapi_connection: Any) -> None:
        commit(dbapi_connection)
        raise ConnectionResetError(errno.ECONNRESET, "reset after COMMIT")

    monkeypatch.setattr(dialect, "do_commit", committed_then_lost)
    lost = post(app, issuer_key, '"lost-0001"')
    problem = assert_problem(lost, 503, "registry_unavailable")
    assert problem["detail"].startswith("outcome unknown")
    monkeypatch.setattr(dialect, "do_commit", commit)

    retry = post(app, issuer_key, '"lost-0001"')
    assert retry.status_code == 201, retry.text
    assert retry.headers[REPLAYED] == "true"
    assert retry.json()["permit_id"] == "0.0"
    assert count(app, permits) == 1


# --- concurrent requests with one key ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """One deployment's settings: a SQLite file, or one PostgreSQL registry."""
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path)
    else:
        with throwaway_database_sync() as url:
            yield Settings(data_dir=tmp_path, database_url=url)


def _at_once(calls: list[Any]) -> list[httpx.Response]:
    """Run each call in its own thread, released together."""
    barrier = threading.Barrier(len(calls))
    answers: list[httpx.Response | None] = [None] * len(calls)

    def run(n: int) -> None:
        barrier.wait()
        answers[n] = calls[n]()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def test_two_instances_given_one_key_at_once_issue_one_permit(
    shared_settings: Settings, clock: FakeClock
) -> None:
    """Two app instances on one registry (two engines: on SQLite two connections to one
    file, on PostgreSQL two pools), the same new key to both at once, ten times over."""
    with running(shared_settings, clock) as one, running(shared_settings, clock) as two:
        key = one.key("issuer", channels=["absher"])
        issued = set()
        for attempt in range(10):
            holder = resident(attempt)
            header = f'"race-{attempt:04d}"'
            answers = _at_once(
                [
                    lambda app=app, header=header, holder=holder: post(
                        app, key, header, holder=holder
                    )
                    for app in (one, two)
                ]
            )
            assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
            assert len({a.json()["permit_id"] for a in answers}) == 1
            assert sorted(a.headers.get(REPLAYED, "") for a in answers) == ["", "true"]
            issued.add(answers[0].json()["permit_id"])
        assert len(issued) == 10
        assert count(one, permits) == 10


def test_one_instance_given_one_key_twice_at_once_issues_one_permit(
    shared_settings: Settings, clock: FakeClock
) -> None:
    with running(shared_settings, clock) as app:
        key = app.key("issuer", channels=["absher"])
        answers = _at_once([lambda: post(app, key, '"twice-0001"') for _ in range(4)])
        assert [a.status_code for a in answers] == [201] * 4
        assert len({a.json()["permit_id"] for a in answers}) == 1
        assert sorted(a.headers.get(REPLAYED, "") for a in answers) == ["", "true", "true", "true"]
        assert count(app, permits) == 1


def test_a_key_still_in_progress_on_postgresql_is_409(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another node holds the key (its request is still being processed): after waiting
    IN_PROGRESS_WAIT this request answers 409 and issues nothing; another key is not held
    up; once the other is done the key issues (the other rolled back here)."""
    monkeypatch.setattr(idempotency, "IN_PROGRESS_WAIT", 0.2)
    with (
        throwaway_database_sync() as url,
        running(Settings(data_dir=tmp_path, database_url=url), clock) as app,
    ):
        credential, key = app.credential("issuer", channels=["absher"])
        engine = create_async_engine(url)
        held = lock_key("idempotency", credential.id, "busy-0001")

        async def hold() -> Any:
            conn = await engine.connect()
            await conn.begin()
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({held})")
            return conn

        other = app.run(hold)
        try:
            busy = post(app, key, '"busy-0001"')
            problem = assert_problem(busy, 409, "idempotency_in_progress")
            assert problem["title_ar"]
            free = post(app, key, '"free-0001"', holder=IQAMA_2)
            assert free.status_code == 201, free.text
        finally:
            app.run(other.close)
            app.run(engine.dispose)
        done = post(app, key, '"busy-0001"')
        assert done.status_code == 201, done.text
        assert REPLAYED not in done.headers
        assert count(app, permits) == 2
