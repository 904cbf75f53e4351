"""Benchmark: the core verify of one token against a bare Ed25519 verify, measured in one run.

Prints per-operation times, their ratios, and the standard permit's size. Budget (DESIGN §8):
a full core verify costs at most 1.15x one bare verify by the library the core uses.
With `--instructions`, also counts instructions under valgrind's callgrind, which repeat
from run to run (within about 0.02%) where wall-clock time on a shared machine does not;
the verdict stays on wall-clock time and the budget line says so.
Run: `./dev bench` or `.venv/bin/python bench/verify_core.py [--rounds N] [--instructions]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from dataclasses import dataclass
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
CHECKPOINT = "shumaisi"
NOW = int(dt.datetime(2027, 5, 1, 9, 0, tzinfo=dt.UTC).timestamp())
# A throwaway key from a fixed label: Ed25519 verification is variable-time, so a fixed key
# and token keep instruction counts the same from run to run. Nothing trusts this key.
BENCH_SEED = hashlib.sha256(b"checkpoint bench/verify_core").digest()
CHILD_MODES = ("nothing", "bare", "core")
_TOTALS = re.compile(rb"^totals:\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Fixture:
    """One valid standard permit, its verifier, and the exact input of the bare verify."""

    verifier: Verifier
    token: str
    signed_message: bytes
    """signature + signed bytes: what crypto_sign_open takes."""
    public_key: bytes

    def bare(self) -> object:
        return nacl.bindings.crypto_sign_open(self.signed_message, self.public_key)

    def core(self) -> object:
        return self.verifier.verify(self.token, CHECKPOINT, NOW)


def _fixture() -> Fixture:
    signer = Signer.from_seed(BENCH_SEED)
    keyring = Keyring([signer.entry(not_before=NOW - 30 * 86_400)])
    mirror = StatusMirror()
    mirror.confirm(NOW)
    verifier = Verifier(keyring, default_policy(), mirror)
    permit = Permit(
        list_id=1,
        index=123_456,
        holder="2123456789",
        category=Category.ESTABLISHMENT_EMPLOYEE,
        season=1,
        not_before=NOW - 86_400,
        expires=NOW + 30 * 86_400,
        issued_at=NOW - 2 * 86_400,
        entry_points=0b11,
    )
    token = signer.sign_permit(permit)
    assert verifier.verify(token, CHECKPOINT, NOW).valid
    envelope = split_token(token)
    return Fixture(verifier, token, envelope.signature + envelope.signed, signer.public_key)


def _per_call(fn: Callable[[], object], number: int) -> float:
    return timeit.timeit(fn, number=number) / number


def _wall_clock(fx: Fixture, rounds: int, number: int) -> dict[str, float]:
    """Median seconds per call of each operation, over interleaved rounds."""
    envelope = split_token(fx.token)
    openssl_key = Ed25519PublicKey.from_public_bytes(fx.public_key)
    verifier, tokens = fx.verifier, [fx.token] * BATCH
    candidates: dict[str, Callable[[], object]] = {
        "bare verify, libsodium (PyNaCl)": fx.bare,
        "bare verify, OpenSSL (cryptography)": lambda: openssl_key.verify(
            envelope.signature, envelope.signed
        ),
        "core verify, one token": fx.core,
    }
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    samples["core verify_batch, per token"] = []
    for _ in range(rounds):  # interleaved, so drift on a shared machine hits all alike
        for name, fn in candidates.items():
            samples[name].append(_per_call(fn, number))
        batch_rounds = max(1, number // BATCH)
        samples["core verify_batch, per token"].append(
            _per_call(lambda: verifier.verify_batch(tokens, CHECKPOINT, NOW), batch_rounds) / BATCH
        )
    return {name: statistics.median(values) for name, values in samples.items()}


def _child(mode: str, iterations: int) -> int:
    """Run `mode` `iterations` times after the same set-up as every other mode (under callgrind).

    Every mode warms up both operations first, so one-off costs (first calls, caches) fall
    into the set-up that the "nothing" run subtracts.
    """
    fx = _fixture()
    fx.bare()
    fx.core()
    fn = {"bare": fx.bare, "core": fx.core}.get(mode)
    if fn is None:
        for _ in range(iterations):
            pass
    else:
        for _ in range(iterations):
            fn()
    return 0


def _instructions(valgrind: str, iterations: int) -> dict[str, float]:
    """Instructions per call of the bare and the core verify, counted by callgrind.

    Each mode runs in its own process; the "nothing" run (same set-up, empty loop) is
    subtracted, so start-up and set-up cancel out.
    """
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # same hashing, same code paths, every run
    with tempfile.TemporaryDirectory(prefix="verify_core-") as tmp:
        outputs = {mode: Path(tmp) / f"callgrind.{mode}" for mode in CHILD_MODES}
        children = {
            mode: subprocess.Popen(
                [
                    valgrind,
                    "--tool=callgrind",
                    f"--callgrind-out-file={outputs[mode]}",
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--iterations",
                    str(iterations),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for mode in CHILD_MODES
        }
        totals: dict[str, int] = {}
        for mode, child in children.items():
            _, stderr = child.communicate()
            found = _TOTALS.search(outputs[mode].read_bytes()) if child.returncode == 0 else None
            if found is None:
                raise RuntimeError(f"callgrind run {mode!r} failed:\n{stderr.decode()[-2000:]}")
            totals[mode] = int(found[1])
    return {mode: (totals[mode] - totals["nothing"]) / iterations for mode in CHILD_MODES[1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median kept)")
    parser.add_argument("--number", type=int, default=2000, help="calls per round")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions with valgrind --tool=callgrind (about a minute)",
    )
    parser.add_argument(
        "--iterations", type=int, default=500, help="calls per callgrind run (--instructions)"
    )
    parser.add_argument("--child", choices=CHILD_MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.iterations)

    valgrind = shutil.which("valgrind")
    if args.instructions and valgrind is None:
        print("verify_core: --instructions needs valgrind on PATH, and it is not there")
        return 2

    fx = _fixture()
    load = os.getloadavg()[0]
    median = _wall_clock(fx, args.rounds, args.number)
    base = median["bare verify, libsodium (PyNaCl)"]
    print(f"verify_core: {args.rounds} rounds x {args.number} calls, median per call")
    # Other work on a shared machine slows the Python side of the core more than the bare
    # verify's tight loop, so the wall-clock ratio rises with it; say how busy it was.
    print(f"  machine: {os.cpu_count()} CPUs, load average {load:.2f} when the run started")
    for name, value in median.items():
        print(f"  {name:<38} {value * 1e6:8.1f} us   {value / base:5.2f}x libsodium")
    core_ratio = median["core verify, one token"] / base
    batch_ratio = median["core verify_batch, per token"] / base
    openssl_ratio = median["bare verify, OpenSSL (cryptography)"] / base
    print(f"  OpenSSL / libsodium bare verify: {openssl_ratio:.2f}x (the core uses libsodium)")

    instruction_note = "instructions not counted (--instructions)"
    if args.instructions:
        assert valgrind is not None
        counts = _instructions(valgrind, args.iterations)
        instruction_ratio = counts["core"] / counts["bare"]
        print(f"callgrind: {args.iterations} calls per run, minus a run doing nothing")
        print(f"  bare verify, libsodium (PyNaCl)        {counts['bare']:9,.0f} instructions")
        print(
            f"  core verify, one token                 {counts['core']:9,.0f} instructions"
            f"   {instruction_ratio:5.3f}x libsodium"
        )
        instruction_note = f"instructions {instruction_ratio:.3f}x (shown, not judged)"

    envelope = split_token(fx.token)
    raw = b45decode(fx.token[len(PREFIX) :])
    print("standard permit size:")
    print(
        f"  envelope {len(raw)} bytes (payload {len(envelope.payload)}), "
        f"token {len(fx.token)} chars"
    )
    version_m, version_q = (
        qr_version(fx.token, ERROR_CORRECT_M),
        qr_version(fx.token, ERROR_CORRECT_Q),
    )
    print(f"  QR version {version_m} at error correction M, {version_q} at Q")

    ok = core_ratio <= BUDGET and version_m <= 7
    print(
        f"budget: core verify at most {BUDGET}x bare, judged on wall-clock: "
        f"wall-clock {core_ratio:.3f}x, {instruction_note}; batch {batch_ratio:.3f}x; "
        f"QR-M version {version_m} (at most 7): " + ("MET" if ok else "NOT MET")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
