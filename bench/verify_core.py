"""Benchmark: the core verify of one token against a bare Ed25519 verify, measured in one run.

Prints per-operation times, their ratios, and the standard permit's size. Budget (DESIGN §8):
a full core verify costs at most 1.15x one bare verify by the library the core uses.
Run: `./dev bench` or `.venv/bin/python bench/verify_core.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nacl.bindings
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from qrcode.constants import ERROR_CORRECT_M, ERROR_CORRECT_Q

from checkpoint.model import Category, Permit
from checkpoint.policy import default_policy
from checkpoint.signing import Keyring, Signer
from checkpoint.statuslist import StatusMirror
from checkpoint.token import PREFIX, b45decode, split_token
from checkpoint.verify import Verifier
from issuer.qr import qr_version

BUDGET = 1.15
BATCH = 500


def _per_call(fn: Callable[[], object], number: int) -> float:
    return timeit.timeit(fn, number=number) / number


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median kept)")
    parser.add_argument("--number", type=int, default=2000, help="calls per round")
    args = parser.parse_args()

    policy = default_policy()
    now = int(dt.datetime(2027, 5, 1, 9, 0, tzinfo=dt.UTC).timestamp())
    signer = Signer.generate()
    keyring = Keyring([signer.entry(not_before=now - 30 * 86_400)])
    mirror = StatusMirror()
    mirror.confirm(now)
    verifier = Verifier(keyring, policy, mirror)
    permit = Permit(
        list_id=1,
        index=123_456,
        holder="2123456789",
        category=Category.ESTABLISHMENT_EMPLOYEE,
        season=1,
        not_before=now - 86_400,
        expires=now + 30 * 86_400,
        issued_at=now - 2 * 86_400,
        entry_points=0b11,
    )
    token = signer.sign_permit(permit)
    assert verifier.verify(token, "shumaisi", now).valid
    envelope = split_token(token)
    signed_message = envelope.signature + envelope.signed
    public = signer.public_key
    openssl_key = Ed25519PublicKey.from_public_bytes(public)
    tokens = [token] * BATCH

    candidates: dict[str, Callable[[], object]] = {
        "bare verify, libsodium (PyNaCl)": lambda: nacl.bindings.crypto_sign_open(
            signed_message, public
        ),
        "bare verify, OpenSSL (cryptography)": lambda: openssl_key.verify(
            envelope.signature, envelope.signed
        ),
        "core verify, one token": lambda: verifier.verify(token, "shumaisi", now),
    }
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    samples["core verify_batch, per token"] = []
    for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits all alike
        for name, fn in candidates.items():
            samples[name].append(_per_call(fn, args.number))
        batch_rounds = max(1, args.number // BATCH)
        samples["core verify_batch, per token"].append(
            _per_call(lambda: verifier.verify_batch(tokens, "shumaisi", now), batch_rounds) / BATCH
        )

    median = {name: statistics.median(values) for name, values in samples.items()}
    base = median["bare verify, libsodium (PyNaCl)"]
    print(f"verify_core: {args.rounds} rounds x {args.number} calls, median per call")
    for name, value in median.items():
        print(f"  {name:<38} {value * 1e6:8.1f} us   {value / base:5.2f}x libsodium")
    core_ratio = median["core verify, one token"] / base
    batch_ratio = median["core verify_batch, per token"] / base
    openssl_ratio = median["bare verify, OpenSSL (cryptography)"] / base
    print(f"  OpenSSL / libsodium bare verify: {openssl_ratio:.2f}x (the core uses libsodium)")

    raw = b45decode(token[len(PREFIX) :])
    print("standard permit size:")
    print(
        f"  envelope {len(raw)} bytes (payload {len(envelope.payload)}), token {len(token)} chars"
    )
    version_m, version_q = qr_version(token, ERROR_CORRECT_M), qr_version(token, ERROR_CORRECT_Q)
    print(f"  QR version {version_m} at error correction M, {version_q} at Q")

    ok = core_ratio <= BUDGET and version_m <= 7
    print(
        f"budget: core verify {core_ratio:.3f}x bare (at most {BUDGET}x), "
        f"batch {batch_ratio:.3f}x, QR-M version {version_m} (at most 7): "
        + ("MET" if ok else "NOT MET")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
