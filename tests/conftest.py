"""Shared test fixtures: paths to vectors, fixed instants, generated keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkpoint.signing import Keyring, Signer

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "vectors"
SHARED_VECTORS = ROOT.parent / "shared" / "vectors"


@pytest.fixture
def signer() -> Signer:
    """A fresh key for each test: no private key is ever stored in the repo."""
    return Signer.generate()


@pytest.fixture
def keyring(signer: Signer) -> Keyring:
    """A keyring trusting `signer` for permits issued from 2020 on."""
    return Keyring([signer.entry(not_before=1_577_836_800)])
