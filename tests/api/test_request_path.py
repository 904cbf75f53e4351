"""The request path stays on the event loop: no request hands work to a thread."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.conftest import Api, auth


@pytest.fixture
def thread_handoffs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every `run_in_executor` call any event loop makes, by the function it hands over."""
    calls: list[str] = []
    original = asyncio.BaseEventLoop.run_in_executor

    def counting(self: asyncio.BaseEventLoop, executor: Any, func: Any, *args: Any) -> Any:
        calls.append(getattr(func, "__qualname__", repr(func)))
        return original(self, executor, func, *args)

    monkeypatch.setattr(asyncio.BaseEventLoop, "run_in_executor", counting)
    return calls


def test_scans_hand_nothing_to_a_thread(
    app: Api, scanner_key: str, issuer_key: str, thread_handoffs: list[str]
) -> None:
    # A sync hook (the JSON content-type check) once ran in a thread for every request:
    # a thread hop cost about as much CPU as the whole no-op request.
    token = app.issue(issuer_key)["token"]
    thread_handoffs.clear()
    for _ in range(5):
        assert app.verify(scanner_key, token)["outcome"] == "VALID"
    batch = app.client.post(
        "/v1/verify/batch", json={"tokens": [token] * 3}, headers=auth(scanner_key)
    )
    assert batch.status_code == 200
    assert thread_handoffs == []
