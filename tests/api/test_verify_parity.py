"""One verifier, two languages: the scanner page's api/static/verify.js, run in Debian's
Chromium, against the Python core, over the token vectors, thousands of mutated and re-signed
tokens, and the Wycheproof and CCTV Ed25519 vectors. Every case must agree in outcome and
code (and in the permit summary and texts shown); `now` is passed explicitly on both sides."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError
from playwright.sync_api import Browser, Page, sync_playwright

from checkpoint.errors import OfflineTrustError
from checkpoint.manifest import (
    MANIFEST_DOMAIN,
    MANIFEST_PREFIX,
    Manifest,
    Member,
    check_manifest,
    profiles_of,
)
from checkpoint.model import Category, Permit, mask_holder
from checkpoint.offline import (
    DeltaBundle,
    FullBundle,
    RevokedRef,
    StatusListRef,
    sign_bundle,
    status_list_token,
    status_list_uri,
    verify_bundle,
)
from checkpoint.policy import Policy
from checkpoint.policy_file import default_policy
from checkpoint.signing import InProcessKey, KeyEntry, Keyring, KeyStatus, key_entry, sign_permit
from checkpoint.statuslist import StatusList, StatusMirror
from checkpoint.token import BASE45_ALPHABET, PREFIX, assemble, b45decode, b45encode, signing_input
from checkpoint.verify import Verifier
from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
SERVED = ROOT / "api"
"""Served at the origin's root, so the page's modules find each other at /static/."""
VECTORS = ROOT / "tests" / "vectors"
SEED = 20261207
POLICY = default_policy()
HOUR = 3600
DAY = 86_400

EVERY_RULE_OUTCOME = {
    "valid",
    "expired",
    "not_yet_valid",
    "season_closed",
    "unknown_season",
    "category_not_admitted",
    "entry_point_not_admitted",
    "checkpoint_closed",
    "revoked",
    "revocation_stale",
    "outside_signing_window",
}
EVERY_DECODING_OUTCOME = {
    "token_too_long",
    "unknown_prefix",
    "unsupported_version",
    "bad_encoding",
    "malformed_envelope",
    "unknown_key",
    "key_revoked",
    "bad_signature",
    "invalid_field",
    "malformed_payload",
    "trailing_bytes",
}


# --- the browser ---------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[Browser, str]]:
    """Chromium, and a loopback origin (a secure context: WebCrypto) serving api/."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `./dev test` installs Debian's chromium package")
    handler = functools.partial(_Quiet, directory=str(SERVED))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                yield browser, f"http://127.0.0.1:{server.server_address[1]}"
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()


def _open(browser: tuple[Browser, str], init_script: str = "") -> Page:
    chromium, base = browser
    opened = chromium.new_page()
    if init_script:
        opened.add_init_script(init_script)
    opened.goto(f"{base}/static/verify.js")
    opened.evaluate(
        "async () => { window.V = await import('/static/verify.js');"
        " window.O = await import('/static/offline.js'); }"
    )
    return opened


@pytest.fixture(scope="module")
def page(browser: tuple[Browser, str]) -> Iterator[Page]:
    """A page with the verifier loaded as `V`."""
    opened = _open(browser)
    yield opened
    opened.close()


JS_VERIFY = """
async ({ scenario, cases }) => {
  const keyring = await V.loadKeyring(scenario.keys);
  const revoked = new Map(
    Object.entries(scenario.revoked).map(([id, indexes]) => [Number(id), new Set(indexes)]),
  );
  const out = [];
  for (const c of cases) {
    const revocations = {
      isRevoked: (list, index) => revoked.has(list) && revoked.get(list).has(index),
      isCurrent: (now, bound) => c.confirmed_at !== null && now - c.confirmed_at <= bound,
    };
    const trust = { keyring, policy: scenario.policy, revocations };
    out.push(await V.verifyToken(c.token, c.gate, c.now, trust));
  }
  return out;
}
"""


# --- the Python side -----------------------------------------------------------------------


class Scenario:
    """A keyring, a policy and a set of revoked permits; cases are (token, gate, now,
    confirmed_at) and the Python decision of each."""

    def __init__(self, entries: list[KeyEntry], policy: Policy, revoked: dict[int, set[int]]):
        self.entries = entries
        self.policy = policy
        self.revoked = revoked
        self.mirror = StatusMirror()
        for list_id, indexes in revoked.items():
            for index in indexes:
                self.mirror.revoke(list_id, index)
        self.verifier = Verifier(Keyring(entries), policy, self.mirror)
        self.cases: list[dict[str, Any]] = []
        self.expected: list[dict[str, Any]] = []

    def add(self, token: str, gate: str, now: int, confirmed_at: int | None) -> None:
        self.mirror.confirmed_at = confirmed_at
        decision = self.verifier.verify(token, gate, now)
        self.cases.append({"token": token, "gate": gate, "now": now, "confirmed_at": confirmed_at})
        self.expected.append(json.loads(msgspec.json.encode(decision)))  # as /v1/verify sends it

    def payload(self) -> dict[str, Any]:
        return {
            "scenario": {
                "keys": msgspec.to_builtins(self.entries),
                "policy": json.loads(msgspec.json.encode(self.policy)),
                "revoked": {str(k): sorted(v) for k, v in self.revoked.items()},
            },
            "cases": self.cases,
        }


def _disagreements(page: Page, scenario: Scenario) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    got = page.evaluate(JS_VERIFY, scenario.payload())
    assert len(got) == len(scenario.expected)
    return [
        (
            case,
            {
                k: (want.get(k), have.get(k))
                for k in want.keys() | have.keys()
                if want.get(k) != have.get(k)
            },
        )
        for case, want, have in zip(scenario.cases, scenario.expected, got, strict=True)
        if want != have
    ]


def _key(number: int) -> InProcessKey:
    return InProcessKey.from_seed(bytes([number]) * 32)


ACTIVE = _key(1)
RETIRED = _key(2)
"""Verifies permits issued inside [WINDOW_START, WINDOW_END) only."""
REVOKED = _key(3)
STRANGER = _key(4)
"""Not in the keyring."""
SEASON = POLICY.seasons[1]
WINDOW_START = SEASON.opens - 30 * DAY
WINDOW_END = SEASON.opens + 10 * DAY
REVOKED_BITS = {1: {3, 5, 8, 9, 10, 11, 12, 40}, 2: {0}}


def _entries() -> list[KeyEntry]:
    retired = msgspec.structs.replace(
        key_entry(RETIRED, not_before=WINDOW_START),
        status=KeyStatus.RETIRED,
        not_after=WINDOW_END,
    )
    revoked = msgspec.structs.replace(key_entry(REVOKED, not_before=0), status=KeyStatus.REVOKED)
    return [key_entry(ACTIVE, not_before=0), retired, revoked]


def _random_permit(rng: random.Random, now: int, gate_bit: int) -> Permit:
    """A permit around `now` whose every field sometimes breaks one rule."""
    leeway = POLICY.leeway
    start = now + rng.choice(
        [-30 * DAY, -DAY, -HOUR, -leeway - 1, -leeway, leeway, leeway + 1, DAY]
    )
    length = rng.choice([HOUR, DAY, 10 * DAY, 60 * DAY])
    if rng.random() < 0.15:  # expiry right at the leeway's edge
        length = now - start - leeway + rng.choice([-1, 0, 1])
    length = max(length, 1)
    mask = rng.choice([0, 0, 1 << gate_bit, (1 << gate_bit) | 0b1010, 1 << ((gate_bit + 1) % 8)])
    if rng.random() < 0.05:
        mask = rng.getrandbits(32)
    return Permit(
        list_id=rng.choice([0, 1, 1, 2, 7]),
        index=rng.choice([rng.randrange(0, 50), rng.getrandbits(32)]),
        holder=rng.choice(["2123456705", "A1234567", "B7654321XYZ", "1012345671"]),
        category=rng.choice(list(Category)),
        season=rng.choice([1, 1, 2, 2, 3]),
        not_before=max(start, 0),
        expires=max(start, 0) + length,
        issued_at=rng.choice(
            [WINDOW_START - 1, WINDOW_START, WINDOW_END - 1, WINDOW_END, max(start, 0) - DAY]
        ),
        entry_points=mask,
    )


def _random_now(rng: random.Random) -> int:
    """A time near a season's edges, or inside one at any hour."""
    umrah = POLICY.seasons[2]
    edge = rng.choice([SEASON.opens, SEASON.closes, umrah.opens, umrah.closes])
    if rng.random() < 0.5:
        return edge + rng.choice(
            [-POLICY.leeway - 1, -POLICY.leeway, 0, POLICY.leeway - 1, POLICY.leeway]
        )
    return rng.randrange(SEASON.opens, SEASON.closes) + rng.choice([0, 0, 6 * HOUR, 21 * HOUR])


def _confirmed(rng: random.Random, now: int) -> int | None:
    bound = POLICY.revocation_staleness
    return rng.choice([None, now, now - bound, now - bound - 1, now - 3 * bound, now + 5])


def _mutate_text(rng: random.Random, token: str) -> str:
    body = token[len(PREFIX) :]
    kind = rng.randrange(12)
    if kind == 0:  # one character substituted by another of the alphabet
        i = rng.randrange(len(body))
        body = body[:i] + rng.choice(BASE45_ALPHABET) + body[i + 1 :]
    elif kind == 1:  # truncated
        body = body[: rng.randrange(len(body))]
    elif kind == 2:  # another script's digit, a full-width letter, a lower-case letter
        i = rng.randrange(len(body))
        body = body[:i] + rng.choice(["٣", "۷", "３", "Ａ", "a", "𝟙", "é"]) + body[i + 1 :]
    elif kind == 3:
        return token + rng.choice(["\n", "\r\n", " ", "\x00"])
    elif kind == 4:  # a triplet over 65535 or a pair over 255
        body = body[: len(body) - len(body) % 3] + rng.choice(["::", ":::", "GGW"])
    elif kind == 5:
        return rng.choice(["CP2:", "cp1:", "CP1", "", "HC1:"]) + body
    elif kind == 6:  # too long
        return token + "0" * rng.choice([400 - len(token), 401 - len(token), 240])
    elif kind == 7:  # a character dropped or doubled
        i = rng.randrange(len(body))
        body = body[:i] + body[i + 1 :] if rng.random() < 0.5 else body[:i] + body[i] + body[i:]
    else:  # bit flips in the envelope bytes, re-encoded
        raw = bytearray(b45decode(body))
        for _ in range(rng.choice([1, 1, 2, 8])):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        body = b45encode(bytes(raw))
    return PREFIX + body


_TYPE_BYTES = [
    b"\xc0",
    b"\xc1",
    b"\xc2",
    b"\xc3",
    b"\xcc\x05",
    b"\xcd\x01\x00",
    b"\xce\x00\x00\x00\x05",
    b"\xcf" + b"\xff" * 8,
    b"\xd0\x80",
    b"\xd3" + b"\x00" * 7 + b"\x05",
    b"\xca\x00\x00\x00\x00",
    b"\xcb" + b"\x00" * 8,
    b"\xa4ABCD",
    b"\xa2\xff\xfe",
    b"\xd9\x04WXYZ",
    b"\xc4\x02ab",
    b"\xd4\x01\x00",
    b"\xd6\xff\x00\x00\x00\x00",
    b"\x90",
    b"\x92\x01\x02",
    b"\x80",
    b"\xdc\x00",
    b"\xdd\xff\xff\xff\xff",
    b"\xe0",
    b"\x7f",
    b"\x0c",
    b"\x00",
    b"\xa5",
    b"\xab\xd9\xa3ABCDEFGHI",
]


def _mutate_payload(rng: random.Random, payload: bytes) -> bytes:
    """A msgpack payload changed so that its signature can still be made valid."""
    data = bytearray(payload)
    kind = rng.randrange(8)
    if kind == 0:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(len(data)) :]
    elif kind == 2:
        data += rng.choice([b"\x00", b"\xc1", b"\xc0", b"\x91"])
    elif kind == 3:  # the array header: another count or width
        header = rng.choice(
            [
                b"\x97",
                b"\x98",
                b"\x9a",
                b"\x9f",
                b"\xdc\x00\x09",
                b"\xdc\x00\x0a",
                b"\xdd\x00\x00\x00\x09",
                b"\xdd\xff\xff\xff\xff",
                b"\x80",
                b"\xa9",
            ]
        )
        data = bytearray(header) + data[1:]
        if header in (b"\x9a", b"\xdc\x00\x0a"):
            data += b"\x00"
    elif kind == 4:  # one byte replaced by a type byte and its data
        i = rng.randrange(1, len(data))
        data[i : i + 1] = rng.choice(_TYPE_BYTES)
    elif kind == 5:  # the holder's string replaced
        holder = rng.choice(
            ["١٢٣٤٥٦", "abcd", "ABC", "A" * 21, "ABCD\n", "\ufeffABCD", "AB CD", "𝟙𝟚𝟛𝟜"]
        )
        encoded = holder.encode()
        start = payload.index(b"\xaa") if b"\xaa" in payload else 3
        header = (
            bytes([0xA0 | len(encoded)]) if len(encoded) < 32 else b"\xd9" + bytes([len(encoded)])
        )
        data = bytearray(payload[:start]) + header + encoded + payload[start + 11 :]
    elif kind == 6:  # random bytes of the payload's length
        data = bytearray(rng.randbytes(len(payload)))
    else:  # the 8-field form, or the category out of range
        data = bytearray(b"\x98") + data[1:-1] if rng.random() < 0.5 else data
        if b"\x0b" in data:
            data[data.index(b"\x0b")] = rng.choice([0x00, 0x0C, 0x7F])
    return bytes(data)


def _signed_raw(key: InProcessKey, payload: bytes) -> str:
    return assemble(key.kid, payload, key.sign(signing_input(key.kid, payload)))


# --- the tests -----------------------------------------------------------------------------


def test_the_token_vectors_agree(page: Page) -> None:
    vectors = json.loads((VECTORS / "token_v1.json").read_text(encoding="utf-8"))
    public = base64.b64encode(bytes.fromhex(vectors["public_key_hex"])).decode()
    entry = KeyEntry(
        kid=vectors["kid_hex"], public_key=public, status=KeyStatus.ACTIVE, not_before=0
    )
    scenario = Scenario([entry], POLICY, {1: {42}})
    for case in vectors["cases"]:
        permit = case["permit"]
        times = [permit["not_before"] - DAY, permit["not_before"] + HOUR, permit["expires"] + DAY]
        for gate in POLICY.gates:
            for now in times:
                scenario.add(case["token"], gate, now, now)
    disagreements = _disagreements(page, scenario)
    assert disagreements == [], disagreements[:2]
    assert {"valid", "revoked", "not_yet_valid", "expired"} <= {
        d["code"] for d in scenario.expected
    }


def test_mutated_and_resigned_tokens_agree(page: Page) -> None:
    rng = random.Random(SEED)
    gates = list(POLICY.gates.values())
    scenario = Scenario(_entries(), POLICY, REVOKED_BITS)
    for _ in range(1500):  # validly signed permits: every rule's outcome
        now = _random_now(rng)
        gate = rng.choice(gates)
        signer = rng.choice([ACTIVE, ACTIVE, ACTIVE, RETIRED, REVOKED, STRANGER])
        token = sign_permit(signer, _random_permit(rng, now, gate.entry_point))
        scenario.add(token, gate.code, now, _confirmed(rng, now))
    for _ in range(1500):  # payloads mutated, then signed: the msgpack decoder's outcomes
        now = _random_now(rng)
        gate = rng.choice(gates)
        payload = msgspec.msgpack.encode(_random_permit(rng, now, gate.entry_point))
        scenario.add(_signed_raw(ACTIVE, _mutate_payload(rng, payload)), gate.code, now, now)
    for _ in range(1500):  # token text mutated: the envelope's outcomes
        now = _random_now(rng)
        gate = rng.choice(gates)
        token = sign_permit(ACTIVE, _random_permit(rng, now, gate.entry_point))
        if rng.random() < 0.1:  # the version byte
            raw = bytearray(b45decode(token[len(PREFIX) :]))
            raw[0] = rng.choice([0, 2, 255])
            token = PREFIX + b45encode(bytes(raw))
        else:
            token = _mutate_text(rng, token)
        scenario.add(token, gate.code, now, now)

    disagreements = _disagreements(page, scenario)
    assert disagreements == [], disagreements[:5]
    codes = Counter(d["code"] for d in scenario.expected)
    assert set(codes) >= EVERY_RULE_OUTCOME | EVERY_DECODING_OUTCOME, codes
    assert codes["valid"] >= 50, codes


def test_an_empty_keyring_is_not_a_forgery(page: Page) -> None:
    scenario = Scenario([], POLICY, {})
    now = SEASON.opens + DAY
    permit = _random_permit(random.Random(SEED), now, 0)
    scenario.add(sign_permit(ACTIVE, permit), "shumaisi", now, now)
    scenario.add("CP1:NOT-A-PERMIT", "shumaisi", now, now)
    assert _disagreements(page, scenario) == []
    assert [d["code"] for d in scenario.expected] == ["keys_not_loaded", "bad_encoding"]


JS_SIGNATURES = """
async (cases) => {
  const bytes = (h) => Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));
  const out = [];
  for (const [pk, msg, sig] of cases) {
    out.push(await V.verifyEd25519(bytes(pk), bytes(msg), bytes(sig)));
  }
  return out;
}
"""


def _libsodium_accepts(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        crypto_sign_open(signature + message, public_key)
    except (CryptoError, ValueError, TypeError):  # a bad signature, or a wrong length
        return False
    return True


def _signature_cases() -> list[tuple[str, str, str]]:
    cases: list[tuple[str, str, str]] = []
    wycheproof = json.loads((VECTORS / "wycheproof_ed25519_test.json").read_text(encoding="utf-8"))
    for group in wycheproof["testGroups"]:
        for test in group["tests"]:
            cases.append((group["publicKey"]["pk"], test["msg"], test["sig"]))
    for test in json.loads((VECTORS / "cctv_ed25519vectors.json").read_text(encoding="utf-8")):
        cases.append((test["key"], test["msg"].encode().hex(), test["sig"]))
    return cases


def test_raw_signature_verification_agrees_with_libsodium(page: Page) -> None:
    cases = _signature_cases()
    want = [_libsodium_accepts(*(bytes.fromhex(x) for x in case)) for case in cases]
    got = page.evaluate(JS_SIGNATURES, cases)
    disagreements = [
        (i, case, w) for i, (case, w, g) in enumerate(zip(cases, want, got, strict=True)) if w != g
    ]
    assert disagreements == []
    # The pinned CCTV set: exactly the cases libsodium accepts, so neither side drifted.
    accepted = json.loads((VECTORS / "cctv_ed25519_accepted.json").read_text(encoding="utf-8"))
    wycheproof_count = len(cases) - len(
        json.loads((VECTORS / "cctv_ed25519vectors.json").read_text())
    )
    cctv = [i - wycheproof_count for i, ok in enumerate(got) if ok and i >= wycheproof_count]
    assert cctv == accepted["accepted"]
    assert 0 < sum(got) < len(got)


def test_without_webcrypto_ed25519_nothing_is_accepted(browser: tuple[Browser, str]) -> None:
    # A browser before Chromium 137: WebCrypto refuses the algorithm.
    no_ed25519 = (
        "const importKey = crypto.subtle.importKey.bind(crypto.subtle);"
        "crypto.subtle.importKey = (format, data, algorithm, ...rest) =>"
        " (algorithm && algorithm.name === 'Ed25519')"
        " ? Promise.reject(new DOMException('no', 'NotSupportedError'))"
        " : importKey(format, data, algorithm, ...rest);"
    )
    old = _open(browser, no_ed25519)
    try:
        scenario = Scenario(_entries(), POLICY, {})
        now = SEASON.opens + DAY
        permit = Permit(
            1, 1, "2123456705", Category.DOMESTIC_WORKER, 1, now - DAY, now + DAY, now - DAY
        )
        scenario.add(sign_permit(ACTIVE, permit), "shumaisi", now, now)
        assert [d["code"] for d in scenario.expected] == ["valid"]
        (decision,) = old.evaluate(JS_VERIFY, scenario.payload())
        assert (decision["outcome"], decision["code"]) == (
            "INDETERMINATE",
            "signature_check_unavailable",
        )
        assert "check manually" in decision["message_en"]
    finally:
        old.close()


# --- the offline bundle: the page refuses what checkpoint.offline.verify_bundle refuses -----

TRUST = _key(9)
BUNDLE_NOW = SEASON.opens + DAY

JS_BUNDLES = """
async ({ trust, cases }) => {
  const keyring = await V.loadKeyring(trust);
  const out = [];
  for (const [token, now] of cases) {
    try {
      await O.verifyBundle(token, keyring, now);
      out.push(true);
    } catch (err) {
      if (!(err instanceof O.BundleRefused)) throw err;
      out.push(false);
    }
  }
  return out;
}
"""


def _list_token(signer: InProcessKey, list_id: int = 0, **changes: Any) -> str:
    status = StatusList(list_id)
    status.set(5)
    times = {"iat": BUNDLE_NOW - 60, "exp": BUNDLE_NOW + HOUR, "ttl": 300} | changes
    return status_list_token(signer, status, capacity=1024, seq=3, **times)


def _full(
    signer: InProcessKey = TRUST, lists: list[StatusListRef] | None = None, **changes: Any
) -> str:
    bundle = FullBundle(
        iss="checkpoint",
        iat=changes.get("iat", BUNDLE_NOW - 60),
        exp=changes.get("exp", BUNDLE_NOW + HOUR),
        ttl=300,
        seq=3,
        keyring_version=1,
        policy_version=POLICY.version,
        offline_revocation_bound=HOUR,
        keys=tuple(_entries()),
        trust_keys=(key_entry(TRUST, not_before=0),),
        policy=msgspec.to_builtins(POLICY),
        status_lists=tuple(
            [StatusListRef(id=0, uri=status_list_uri(0), capacity=1024, token=_list_token(TRUST))]
            if lists is None
            else lists
        ),
    )
    return sign_bundle(signer, bundle)


def _ref(
    token: str, list_id: int = 0, capacity: int = 1024, uri: str | None = None
) -> StatusListRef:
    return StatusListRef(
        id=list_id, uri=uri or status_list_uri(list_id), capacity=capacity, token=token
    )


def _bundle_cases(rng: random.Random) -> list[tuple[str, int]]:
    good = _full()
    delta = sign_bundle(
        TRUST,
        DeltaBundle(
            iss="checkpoint",
            iat=BUNDLE_NOW - 60,
            exp=BUNDLE_NOW + HOUR,
            ttl=300,
            seq=4,
            since_seq=3,
            keyring_version=1,
            policy_version=POLICY.version,
            offline_revocation_bound=HOUR,
            revocations=(RevokedRef(4, 0, 7),),
        ),
    )
    header, claims, signature = good.split(".")
    cases = [
        (good, BUNDLE_NOW),
        (delta, BUNDLE_NOW),
        (good, BUNDLE_NOW + HOUR + POLICY.leeway - 1),  # expiry, with the leeway
        (good, BUNDLE_NOW + HOUR + POLICY.leeway),
        (good, BUNDLE_NOW - 60 - POLICY.leeway),  # issued "in the future" by the leeway
        (good, BUNDLE_NOW - 61 - POLICY.leeway),
        (_full(STRANGER), BUNDLE_NOW),  # another key
        (_full(lists=[_ref(_list_token(STRANGER))]), BUNDLE_NOW),  # a list by another key
        (
            _full(lists=[_ref(_list_token(TRUST, exp=BUNDLE_NOW - HOUR))]),
            BUNDLE_NOW,
        ),  # expired list
        (_full(lists=[_ref(_list_token(TRUST, list_id=1))]), BUNDLE_NOW),  # another list's token
        (_full(lists=[_ref(_list_token(TRUST), uri="urn:checkpoint:status-list:9")]), BUNDLE_NOW),
        (_full(lists=[_ref(_list_token(TRUST), capacity=1 << 20)]), BUNDLE_NOW),  # too short
        (_full(lists=[_ref(_list_token(TRUST)), _ref(_list_token(TRUST))]), BUNDLE_NOW),  # twice
        (_list_token(TRUST), BUNDLE_NOW),  # a list token offered as a bundle
        (f"{header}.{claims}", BUNDLE_NOW),
        (f"{header}.{claims}.{signature}=", BUNDLE_NOW),
        (good + "\n", BUNDLE_NOW),
    ]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for _ in range(60):  # one character changed anywhere
        i = rng.randrange(len(good))
        if good[i] == ".":
            continue
        cases.append(
            (good[:i] + rng.choice(alphabet.replace(good[i], "")) + good[i + 1 :], BUNDLE_NOW)
        )
    return cases


def _python_accepts(token: str, now: int) -> bool:
    try:
        verify_bundle(token, Keyring([key_entry(TRUST, not_before=0)]), now)
    except OfflineTrustError:
        return False
    return True


def test_the_page_refuses_the_bundles_the_python_check_refuses(page: Page) -> None:
    cases = _bundle_cases(random.Random(SEED))
    want = [_python_accepts(token, now) for token, now in cases]
    trust = msgspec.to_builtins([key_entry(TRUST, not_before=0)])
    got = page.evaluate(JS_BUNDLES, {"trust": trust, "cases": cases})
    assert [i for i, (w, g) in enumerate(zip(want, got, strict=True)) if w != g] == []
    assert want[:6] == [True, True, True, False, True, False]
    assert sum(want) < len(want) - 60  # every changed character refused, on both sides


# --- the dispatch manifest: verify.js checkManifest against checkpoint.manifest ------------

JS_MANIFEST = JS_VERIFY.replace("V.verifyToken(", "V.checkManifest(")
MANIFEST_NOW = POLICY.seasons[2].opens + 40 * DAY + 10 * HOUR
"""Inside the Umrah season, in the Hajj key's window too."""
OWN_BIT = (2, 5)
"""The manifests' own status-list bit, not revoked; (2, 0) is, in REVOKED_BITS."""
MANIFEST_REVOKED = REVOKED_BITS | {2: {0}, 0: {3, 20}}


class ManifestScenario(Scenario):
    """A Scenario whose cases are manifest tokens, decided by check_manifest."""

    def add(self, token: str, gate: str, now: int, confirmed_at: int | None) -> None:
        self.mirror.confirmed_at = confirmed_at
        check = check_manifest(self.verifier, token, gate, now)
        self.cases.append({"token": token, "gate": gate, "now": now, "confirmed_at": confirmed_at})
        self.expected.append(json.loads(msgspec.json.encode(check)))  # as the route sends it


def _bus(count: int, start: int = 0, category: Category = Category.UMRAH) -> list[Permit]:
    at = MANIFEST_NOW
    return [
        Permit(0, start + n, f"P{start + n:07d}", category, 2, at - HOUR, at + DAY, at - DAY)
        for n in range(count)
    ]


def _manifest(permits: list[Permit], **fields: Any) -> Manifest:
    profiles, chosen = profiles_of(permits)
    values: dict[str, Any] = {
        "order": 7,
        "revision": 1,
        "part": 1,
        "parts": 1,
        "list_id": OWN_BIT[0],
        "index": OWN_BIT[1],
        "establishment": "UMRAH-CO",
        "checkpoint": "shumaisi",
        "plate": "1234 ABC",
        "not_before": MANIFEST_NOW - 1800,
        "expires": MANIFEST_NOW + 4 * HOUR,
        "issued_at": MANIFEST_NOW - DAY,
        "first_seat": 1,
        "profiles": profiles,
        "members": tuple(
            Member(p.list_id, p.index, mask_holder(p.holder), c)
            for p, c in zip(permits, chosen, strict=True)
        ),
    }
    return Manifest(**(values | fields))


def _signed_manifest(key: InProcessKey, payload: bytes, kid: bytes | None = None) -> str:
    kid = key.kid if kid is None else kid
    return assemble(
        kid, payload, key.sign(signing_input(kid, payload, MANIFEST_DOMAIN)), MANIFEST_PREFIX
    )


def _sign(manifest: Manifest, key: InProcessKey = ACTIVE) -> str:
    return _signed_manifest(key, msgspec.msgpack.encode(manifest))


def _named_manifests() -> list[tuple[str, str, int, int | None]]:
    """(token, gate, now, confirmed_at): each way a manifest is decided, once at least;
    revocation data confirmed at `now` unless the case says otherwise."""
    now = MANIFEST_NOW
    end = now + 4 * HOUR  # the manifests' expiry; their members' is a day after now
    bus = _bus(49) + _bus(1, start=49, category=Category.RAWDAH)  # 0.3 and 0.20 revoked
    good = _sign(_manifest(bus))
    raw = bytearray(b45decode(good[len(MANIFEST_PREFIX) :]))
    raw[20] ^= 0x01  # a payload byte, the signature left as it was
    altered = MANIFEST_PREFIX + b45encode(bytes(raw))
    payload = msgspec.msgpack.encode(_manifest(bus))
    part1, part2 = bus[:30], bus[30:]
    return (
        [
            (good, "shumaisi", now, now),
            (good, "shumaisi", now, None),  # stale revocation data: undecided, everyone listed
            (good, "shumaisi", end + POLICY.leeway, end + POLICY.leeway),  # expired
            (good, "shumaisi", end + POLICY.leeway - 1, end + POLICY.leeway - 1),
            (good, "shumaisi", now - 1800 - POLICY.leeway - 1, now),  # not yet valid
            (good, "shumaisi", now - 1800 - POLICY.leeway, now),
            (good, "al-kar", now, now),  # another checkpoint
            (_sign(_manifest(bus, checkpoint="al-kar")), "al-kar", now, now),  # entry point
            (altered, "shumaisi", now, now),
            (_signed_manifest(STRANGER, payload, kid=ACTIVE.kid), "shumaisi", now, now),  # forged
            (_signed_manifest(STRANGER, payload), "shumaisi", now, now),  # unknown key
            (_signed_manifest(REVOKED, payload), "shumaisi", now, now),
            (_sign(_manifest(bus, issued_at=WINDOW_END), RETIRED), "shumaisi", now, now),
            (_sign(_manifest(bus, issued_at=WINDOW_END - 1), RETIRED), "shumaisi", now, now),
            (_sign(_manifest(bus, list_id=2, index=0)), "shumaisi", now, now),  # cancelled
            (_sign(_manifest(bus, list_id=2, index=0)), "shumaisi", now, None),
            (good[:-7], "shumaisi", now, now),  # truncated
            (good[: len(good) // 2], "shumaisi", now, now),
            (sign_permit(ACTIVE, bus[0]), "shumaisi", now, now),  # a permit token
            ("CP1:" + good[len(MANIFEST_PREFIX) :], "shumaisi", now, now),
            (
                _signed_raw(ACTIVE, payload).replace(PREFIX, MANIFEST_PREFIX, 1),
                "shumaisi",
                now,
                now,
            ),
            (good + "0" * (3392 - len(good)), "shumaisi", now, now),  # too long
            (_sign(_manifest(part1, parts=2)), "shumaisi", now, now),
            (_sign(_manifest(part2, part=2, parts=2, first_seat=31)), "shumaisi", now, now),
            (_sign(_manifest(part2, part=3, parts=2, first_seat=31)), "shumaisi", now, now),
            (_sign(_manifest(part1, members=())), "shumaisi", now, now),  # no one on board
            (_sign(_manifest(part1, profiles=())), "shumaisi", now, now),  # names no profile
            (_sign(_manifest(_bus(60))), "shumaisi", now, now),  # a full bus
        ]
        + [  # fields msgspec's constraints refuse (a Struct built in Python is not checked)
            (_sign(_manifest(part1, **{name: value})), "shumaisi", now, now)
            for name, value in [
                ("members", (Member(0, 1, "*" * 17 + "1234", 0),)),
                ("members", (Member(0, 1, "*" * 16 + "1234", 0),)),
                ("members", (Member(0, 1, "***12345", 0),)),
                ("members", (Member(0, 1, "1234", 0), Member(0, 2, "**1a34", 0))),
                ("members", (Member(0, 1, "**1234", 60),)),
                ("plate", "1234 ABC "),
                ("plate", "A" * 17),
                ("checkpoint", "Shumaisi"),
                ("establishment", ""),
                ("establishment", "UMRAH_CO"),
                ("first_seat", 481),
                ("part", 9),
                ("revision", 0),
            ]
        ]
    )


def _random_manifest(rng: random.Random, gates: list[Any]) -> tuple[str, str, int, int | None]:
    now = _random_now(rng)
    gate = rng.choice(gates)
    permits = [_random_permit(rng, now, gate.entry_point) for _ in range(rng.randrange(1, 12))]
    leeway = POLICY.leeway
    start = now + rng.choice([-DAY, -leeway - 1, -leeway, leeway, leeway + 1])
    manifest = _manifest(
        permits,
        checkpoint=gate.code if rng.random() < 0.9 else rng.choice(gates).code,
        not_before=start,
        expires=max(start, now - leeway + rng.choice([-1, 0, 1, HOUR])),
        issued_at=rng.choice([WINDOW_START - 1, WINDOW_START, WINDOW_END - 1, WINDOW_END]),
        list_id=rng.choice([2, 2, 2, 1]),
        index=rng.choice([0, 5, 9]),
        first_seat=rng.choice([1, 31, 421]),
    )
    key = rng.choice([ACTIVE] * 6 + [RETIRED, REVOKED, STRANGER])
    payload = msgspec.msgpack.encode(manifest)
    if rng.random() < 0.3:  # a payload changed, then signed: the decoder's verdicts
        data = bytearray(payload)
        for _ in range(rng.choice([1, 1, 2])):
            if rng.random() < 0.5:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            else:
                i = rng.randrange(1, len(data))
                data[i : i + 1] = rng.choice(_TYPE_BYTES)
        payload = bytes(data)
    token = _signed_manifest(key, payload)
    if rng.random() < 0.1:
        token = _mutate_text(rng, PREFIX + token[len(MANIFEST_PREFIX) :])
        token = token.replace(PREFIX, MANIFEST_PREFIX, 1)
    return token, gate.code, now, _confirmed(rng, now)


EVERY_MANIFEST_OUTCOME = {
    "manifest_valid",
    "manifest_unreadable",
    "manifest_not_authentic",
    "manifest_not_yet_valid",
    "manifest_expired",
    "manifest_other_checkpoint",
    "manifest_cancelled",
    "revocation_stale",
}


def test_manifests_agree(page: Page) -> None:
    scenario = ManifestScenario(_entries(), POLICY, MANIFEST_REVOKED)
    for case in _named_manifests():
        scenario.add(*case)
    rng = random.Random(SEED)
    gates = list(POLICY.gates.values())
    for _ in range(1500):
        scenario.add(*_random_manifest(rng, gates))

    got = page.evaluate(JS_MANIFEST, scenario.payload())
    disagreements = [
        (case["token"][:40], case["now"], want["code"], have["code"])
        for case, want, have in zip(scenario.cases, scenario.expected, got, strict=True)
        if want != have
    ]
    assert disagreements == [], disagreements[:5]
    codes = Counter(d["code"] for d in scenario.expected)
    assert set(codes) >= EVERY_MANIFEST_OUTCOME, codes
    member_codes = Counter(m["decision"]["code"] for d in scenario.expected for m in d["members"])
    assert set(member_codes) >= EVERY_RULE_OUTCOME - {"outside_signing_window"}, member_codes
    valid = scenario.expected[0]
    refused = {
        m["seat"]: m["decision"]["code"]
        for m in valid["members"]
        if m["decision"]["code"] != "valid"
    }
    assert refused == {4: "revoked", 21: "revoked", 50: "category_not_admitted"}
    assert (valid["admitted"], valid["refused"], valid["manual"]) == (47, 3, 0)
    assert [scenario.expected[i]["code"] for i in (9, 10, 16, 18, 22, 23)] == [
        "manifest_not_authentic",
        "manifest_not_authentic",
        "manifest_unreadable",
        "manifest_unreadable",
        "manifest_valid",
        "manifest_valid",
    ]


def test_a_manifest_with_no_keys_loaded_is_not_a_forgery(page: Page) -> None:
    scenario = ManifestScenario([], POLICY, {})
    scenario.add(_sign(_manifest(_bus(3))), "shumaisi", MANIFEST_NOW, MANIFEST_NOW)
    assert page.evaluate(JS_MANIFEST, scenario.payload()) == scenario.expected
    assert [d["code"] for d in scenario.expected] == ["keys_not_loaded"]
