"""Benchmark: issuing throughput with the file key against a PKCS#11 key, measured in one run.

Signs a batch of standard permits (sign_permit, as the issuer does for each stored permit)
with each private-key backend behind the KeyStore: the file backend (an encrypted PKCS#8
PEM, signing in this process) and the PKCS#11 backend (a non-extractable key in a SoftHSM2
token, in a private token directory made for the run). Prints permits per second of each and
the ratio to the file key, and the same for the bare signature of each permit's signing
input, so the cost of the PKCS#11 call itself shows apart from the token encoding. Ratios
are paired: each round runs every operation back to back, the ratio is taken within the
round, and the median of those is kept, so drift on a shared machine cancels. Shown, not
judged: there is no budget yet (issue #11).
Run: `./dev bench` or `.venv/bin/python bench/signing_backends.py [--rounds N] [--batch N]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verify_core import NOW, paired_medians, standard_permit

from checkpoint.model import Permit
from checkpoint.signing import KeyEntry, Signer, sign_permit, verify_signature
from checkpoint.token import encode_payload, signing_input
from issuer.hsm import Pkcs11Keys
from issuer.keystore import FileKeys, load_signer, new_entry
from tests.softhsm import USER_PIN, softhsm_tokens

TOKEN = "bench"
FILE = "file key, sign_permit"
PKCS11 = "PKCS#11 key, sign_permit"
FILE_BARE = "file key, bare sign"
PKCS11_BARE = "PKCS#11 key, bare sign"


def _backend(keys: FileKeys | Pkcs11Keys) -> tuple[Signer, KeyEntry]:
    """A new key in `keys`, loaded back as the issuer does."""
    entry = new_entry(keys, NOW - 30 * 86_400)
    return load_signer(keys, entry), entry


def _batch(signer: Signer, entry: KeyEntry, permits: list[Permit]) -> Callable[[], object]:
    return lambda: [sign_permit(signer, permit, entry) for permit in permits]


def _bare(signer: Signer, inputs: list[bytes]) -> Callable[[], object]:
    sign = signer.sign
    return lambda: [sign(message) for message in inputs]


def _measure(
    operations: dict[str, Callable[[], object]], rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per batch of each operation, and its median paired ratio to the file
    key's (sign_permit to sign_permit, bare to bare)."""
    baseline_of = {FILE: FILE, PKCS11: FILE, FILE_BARE: FILE_BARE, PKCS11_BARE: FILE_BARE}
    return paired_medians(operations, baseline_of, rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="paired rounds (median kept)")
    parser.add_argument("--batch", type=int, default=1000, help="permits signed per batch")
    args = parser.parse_args()

    permits = [standard_permit(number) for number in range(args.batch)]
    with tempfile.TemporaryDirectory(prefix="signing_backends-") as tmp:
        root = Path(tmp)
        with softhsm_tokens(root / "softhsm", (TOKEN,)) as module:
            hsm = Pkcs11Keys(module, TOKEN, USER_PIN)
            try:
                file_signer, file_entry = _backend(FileKeys(root / "file", b"bench passphrase"))
                hsm_signer, hsm_entry = _backend(hsm)
                inputs = {
                    signer.kid: [signing_input(signer.kid, encode_payload(p)) for p in permits]
                    for signer in (file_signer, hsm_signer)
                }
                for signer in (file_signer, hsm_signer):  # both sign what the verifier checks
                    message = inputs[signer.kid][0]
                    verify_signature(signer.public_key, message, signer.sign(message))
                operations = {
                    FILE: _batch(file_signer, file_entry, permits),
                    PKCS11: _batch(hsm_signer, hsm_entry, permits),
                    FILE_BARE: _bare(file_signer, inputs[file_signer.kid]),
                    PKCS11_BARE: _bare(hsm_signer, inputs[hsm_signer.kid]),
                }
                for operation in operations.values():  # warm-up: first calls, caches
                    operation()
                load = os.getloadavg()[0]
                median, ratio = _measure(operations, args.rounds)
            finally:
                hsm.close()

    print(
        f"signing_backends: {args.rounds} paired rounds of {args.batch} standard permits, "
        "median per batch and median ratio within a round"
    )
    print(f"  machine: {os.cpu_count()} CPUs, load average {load:.2f} when the run started")
    print(f"  PKCS#11 module: {module} (SoftHSM2, one session)")
    for name, seconds in median.items():
        rate = args.batch / seconds
        per = seconds / args.batch * 1e6
        print(
            f"  {name:<26} {rate:9,.0f} permits/s  {per:7.1f} us each  "
            f"{ratio[name]:6.2f}x the file key"
        )
    print(
        f"issuing with PKCS#11: {args.batch / median[PKCS11]:,.0f} permits/s against "
        f"{args.batch / median[FILE]:,.0f} with the file key "
        f"({ratio[PKCS11]:.2f}x the time per permit; shown, not judged)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
