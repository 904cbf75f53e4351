"""Coverage-guided fuzzing (atheris, libFuzzer) of the token decoder and the verifier.

Every input is offered as token text (bytes and their ASCII text) to the full pipeline: a
decision must come back, or the one exception the verifier raises by design (an unknown
checkpoint, not reachable here). Anything else is a crash, and libFuzzer stops with the
input that caused it. The seed corpus is the pinned token vectors, so the fuzzer starts
from valid tokens and mutates inward from there.

    .venv/bin/python bench/fuzz_token.py -runs=200000          # a bounded run
    .venv/bin/python bench/fuzz_token.py -max_total_time=600   # ten minutes
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from checkpoint.errors import RejectReason
    from checkpoint.model import Decision
    from checkpoint.policy_file import default_policy
    from checkpoint.signing import KeyEntry, Keyring, KeyStatus
    from checkpoint.statuslist import StatusMirror
    from checkpoint.token import b45decode, decode_payload, split_token
    from checkpoint.verify import Verifier

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "token_v1.json"
POLICY = default_policy()
GATE = next(iter(POLICY.gates))


def _verifier() -> tuple[Verifier, list[str], int]:
    """A verifier trusting the vectors' key, and the vectors' tokens as seeds."""
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    public = base64.b64encode(bytes.fromhex(vectors["public_key_hex"])).decode()
    keyring = Keyring(
        [KeyEntry(kid=vectors["kid_hex"], public_key=public, status=KeyStatus.ACTIVE, not_before=0)]
    )
    mirror = StatusMirror()
    now = POLICY.seasons[1].opens + 86_400
    mirror.confirm(now)
    tokens = [case["token"] for case in vectors["cases"]]
    return Verifier(keyring, POLICY, mirror), tokens, now


VERIFIER, SEEDS, NOW = _verifier()


def one_input(data: bytes) -> None:
    """The property: the pipeline answers every input with a Decision and raises nothing;
    the decoders alone raise only the verifier's own reasons (RejectReason)."""
    for token in (data, data.decode("latin-1")):
        decision = VERIFIER.verify(token, GATE, NOW)
        assert isinstance(decision, Decision)
    text = data.decode("latin-1")
    # The decoders alone: their refusals are RejectReasons; anything else is a crash.
    with contextlib.suppress(RejectReason):
        b45decode(text)
    with contextlib.suppress(RejectReason):
        decode_payload(data)
    with contextlib.suppress(RejectReason):
        split_token(text)


def main() -> None:
    args = list(sys.argv)
    folders = [a for a in args[1:] if not a.startswith("-")]
    if not folders:
        folders = [tempfile.mkdtemp(prefix="checkpoint-fuzz-")]
        args.append(folders[0])
    corpus = Path(folders[0])
    if not any(corpus.iterdir()):  # a new corpus starts from the pinned vectors
        for number, seed in enumerate(SEEDS):
            (corpus / f"seed-{number}").write_bytes(seed.encode("ascii"))
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
