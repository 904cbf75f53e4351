"""Known-answer vectors: a fixed key and permit give exactly the pinned token text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from checkpoint.model import Category, Permit
from checkpoint.signing import InProcessKey, sign_permit
from checkpoint.token import PREFIX, b45decode, decode_payload, encode_payload, split_token
from tests.conftest import VECTORS

VECTOR_FILE = json.loads((VECTORS / "token_v1.json").read_text())
SIGNER = InProcessKey.from_seed(bytes.fromhex(VECTOR_FILE["secret_key_hex"]))


def _permit(fields: dict[str, Any]) -> Permit:
    return Permit(**{**fields, "category": Category.parse(fields["category"])})


@pytest.mark.parametrize("case", VECTOR_FILE["cases"])
def test_fixed_key_and_permit_give_the_pinned_token(case: dict[str, Any]) -> None:
    permit = _permit(case["permit"])
    assert encode_payload(permit).hex() == case["payload_hex"]
    token = sign_permit(SIGNER, permit)
    assert b45decode(token[len(PREFIX) :]).hex() == case["envelope_hex"]
    assert token == case["token"]


@pytest.mark.parametrize("case", VECTOR_FILE["cases"])
def test_pinned_tokens_verify_with_an_independent_ed25519(case: dict[str, Any]) -> None:
    envelope = split_token(case["token"])
    assert envelope.kid.hex() == VECTOR_FILE["kid_hex"]
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(VECTOR_FILE["public_key_hex"]))
    public.verify(envelope.signature, envelope.signed)
    assert decode_payload(envelope.payload) == _permit(case["permit"])
