"""A Hypothesis state machine over issue, verify, revoke, amend and restart, through the HTTP
API, against a plain model of what each permit's state must be."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from api.runtime.settings import Settings
from tests.api.conftest import (
    CHECKPOINT,
    NATIONAL_ID,
    Api,
    FakeClock,
    assert_problem,
    auth,
    permit_body,
    riyadh,
    running,
)
from tests.issuer.test_issuing import with_check_digit

STEPS = int(os.environ.get("CHECKPOINT_STATE_MACHINE_STEPS", "25"))
RUNS = int(os.environ.get("CHECKPOINT_STATE_MACHINE_RUNS", "8"))
HOLDERS = [with_check_digit(f"2{n:08d}") for n in range(100_000, 100_006)]
"""A few iqama numbers: few enough that the rules about one holder (one active permit per
category and season) meet often."""
CATEGORIES = ("domestic_worker", "dependent")


@dataclass
class Permit:
    """What the model knows of one issued permit."""

    permit_id: str
    token: str
    holder: str
    category: str
    active: bool = True
    revocations: list[int] = field(default_factory=list)


class PermitLifecycle(RuleBasedStateMachine):
    """Every answer of the service against the model: an active permit verifies VALID, a
    withdrawn one `revoked` (after a restart too); one active permit per holder, category
    and season; amending a withdrawn permit is 409; a second revocation answers the first."""

    permits = Bundle("permits")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Permit] = {}

    @initialize()
    def start(self) -> None:
        self.app = START.app()
        self.issuer = self.app.key("issuer", channels=["absher"])
        self.scanner = self.app.key("scanner", checkpoint=CHECKPOINT)
        self.admin = self.app.key("admin")

    def active_for(self, holder: str, category: str) -> Permit | None:
        return next(
            (
                p
                for p in self.model.values()
                if p.active and p.holder == holder and p.category == category
            ),
            None,
        )

    @rule(target=permits, holder=st.sampled_from(HOLDERS), category=st.sampled_from(CATEGORIES))
    def issue(self, holder: str, category: str) -> Any:
        response = self.app.client.post(
            "/v1/permits", json=self.body(holder, category), headers=auth(self.issuer)
        )
        existing = self.active_for(holder, category)
        if existing is not None:
            assert_problem(response, 422, "permit_exists")
            return hypothesis.stateful.multiple()
        assert response.status_code == 201, response.text
        body = response.json()
        permit = Permit(body["permit_id"], body["token"], holder, category)
        assert permit.permit_id not in self.model
        self.model[permit.permit_id] = permit
        return permit

    @rule(permit=permits)
    def verify(self, permit: Permit) -> None:
        decision = self.app.verify(self.scanner, permit.token)
        expected = ("VALID", "valid") if permit.active else ("INVALID", "revoked")
        assert (decision["outcome"], decision["code"]) == expected, decision

    @rule(permit=permits)
    def revoke(self, permit: Permit) -> None:
        response = self.app.client.post(
            "/v1/revocations",
            json={"permit_id": permit.permit_id, "reason": "state machine"},
            headers=auth(self.admin),
        )
        assert response.status_code == 201, response.text
        (revocation,) = response.json()["revocations"]
        if permit.revocations:  # already withdrawn: the first revocation answers again
            assert revocation["seq"] == permit.revocations[0]
        permit.revocations.append(revocation["seq"])
        permit.active = False

    @rule(target=permits, permit=consumes(permits))
    def amend(self, permit: Permit) -> Any:
        response = self.app.client.post(
            f"/v1/permits/{permit.permit_id}/amend",
            json=self.body(permit.holder, permit.category, day=11),
            headers=auth(self.issuer),
        )
        if not permit.active:
            assert_problem(response, 409, "permit_not_active")
            return permit
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["supersedes"] == permit.permit_id
        permit.active = False
        new = Permit(body["permit_id"], body["token"], permit.holder, permit.category)
        self.model[new.permit_id] = new
        return hypothesis.stateful.multiple(permit, new)

    @rule()
    def restart(self) -> None:
        """Stop and start the service on the same data directory: the mirror is rebuilt
        from the registry alone."""
        self.app = START.restart()

    @invariant()
    def one_active_permit_per_holder_and_category(self) -> None:
        seen = set()
        for permit in self.model.values():
            if permit.active:
                key = (permit.holder, permit.category)
                assert key not in seen
                seen.add(key)

    @staticmethod
    def body(holder: str, category: str, day: int = 10) -> dict[str, Any]:
        return permit_body(
            holder=holder, category=category, sponsor=NATIONAL_ID, not_before=riyadh(day)
        )

    def teardown(self) -> None:
        START.stop()


class Starter:
    """Starts the service for one run of the machine on a data directory of its own, and
    restarts it in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = 0
        self._context: Any = None
        self._settings: Settings | None = None

    def app(self) -> Api:
        self.runs += 1
        self._settings = Settings(data_dir=self.root / f"run-{self.runs}")
        return self._start()

    def restart(self) -> Api:
        self.stop()
        return self._start()

    def _start(self) -> Api:
        assert self._settings is not None
        self._context = running(self._settings, FakeClock())
        started: Api = self._context.__enter__()
        return started

    def stop(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None


START: Starter


def test_permit_lifecycle(tmp_path: Path) -> None:
    global START  # noqa: PLW0603 - the machine's class is instantiated by Hypothesis
    START = Starter(tmp_path)
    run_state_machine_as_test(
        PermitLifecycle,
        settings=hypothesis.settings(
            max_examples=RUNS,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
        ),
    )
    assert START.runs >= 1
