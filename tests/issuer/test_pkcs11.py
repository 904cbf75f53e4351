"""Private keys in a PKCS#11 token, against a real SoftHSM2 in a private token directory."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive

from checkpoint.errors import PrivateKeyMissing
from checkpoint.model import Category, Outcome, Permit
from checkpoint.policy_file import default_policy
from checkpoint.signing import (
    InProcessKey,
    Keyring,
    key_entry,
    kid_for,
    sign_permit,
    verify_signature,
)
from checkpoint.statuslist import StatusMirror
from checkpoint.token import split_token
from checkpoint.verify import Verifier
from issuer.errors import HsmLoginFailed, HsmUnavailable
from issuer.hsm import Pkcs11Keys, raw_public_key, shared_pkcs11_keys
from issuer.issuing import Issuer
from issuer.keystore import (
    FileKeys,
    ensure_signing_key,
    generate_key,
    load_signer,
    new_entry,
    private_keys,
)
from issuer.store.keys import add_key
from issuer.store.registry import Registry
from tests.issuer.conftest import NOW, register, verifier
from tests.issuer.test_issuing import INSIDE, request
from tests.softhsm import PROCESS_TOKENS, USER_PIN

TOKEN, PIN_TOKEN, _ = PROCESS_TOKENS
# PIN_TOKEN is never logged in with the right PIN: login is shared by every session of a
# process, so a wrong PIN is only refused by a token this process is not logged in to.

POLICY = default_policy()
HAJJ = POLICY.seasons[1]
T0 = HAJJ.opens - 30 * 86_400
AT = HAJJ.opens + 86_400


@pytest.fixture
def module(softhsm: str) -> str:
    return softhsm


@pytest.fixture
def hsm(module: str) -> Iterator[Pkcs11Keys]:
    keys = Pkcs11Keys(module, TOKEN, USER_PIN)
    yield keys
    keys.close()


@pytest.fixture
def token_session(module: str, hsm: Pkcs11Keys) -> Iterator[pkcs11.Session]:
    """A second session of our own on the token, to look at its objects independently."""
    session = pkcs11.lib(module).get_token(token_label=TOKEN).open()
    yield session
    session.close()


def permit(index: int = 1) -> Permit:
    return Permit(
        list_id=0,
        index=index,
        holder="2123456789",
        category=Category.DOMESTIC_WORKER,
        season=HAJJ.id,
        not_before=AT - 86_400,
        expires=AT + 86_400,
        issued_at=AT - 3600,
    )


def test_a_key_generated_in_the_token_signs_permits_the_verifier_accepts(
    hsm: Pkcs11Keys,
) -> None:
    entry = new_entry(hsm, T0, "hsm")
    signer = load_signer(hsm, entry)
    token = sign_permit(signer, permit(), entry)
    mirror = StatusMirror()
    mirror.confirm(AT)
    decision = Verifier(Keyring([entry]), POLICY, mirror).verify(token, "shumaisi", AT)
    assert decision.outcome is Outcome.VALID
    assert split_token(token).kid == signer.kid


def test_the_token_s_public_key_is_the_keyring_entry(
    hsm: Pkcs11Keys, token_session: pkcs11.Session
) -> None:
    entry = new_entry(hsm, T0)
    public = token_session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=bytes.fromhex(entry.kid))
    assert raw_public_key(public[Attribute.EC_POINT]) == entry.raw_public_key
    assert public.label == entry.kid
    assert kid_for(entry.raw_public_key).hex() == entry.kid
    assert hsm.location(entry.kid).endswith(f"CKA_LABEL {entry.kid}")


def test_the_private_key_is_sensitive_and_never_extractable(
    hsm: Pkcs11Keys, token_session: pkcs11.Session
) -> None:
    entry = new_entry(hsm, T0)
    private = token_session.get_key(
        object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(entry.kid)
    )
    assert private.label == entry.kid
    assert private[Attribute.TOKEN] is True
    assert private[Attribute.SENSITIVE] is True
    assert private[Attribute.ALWAYS_SENSITIVE] is True
    assert private[Attribute.EXTRACTABLE] is False
    assert private[Attribute.NEVER_EXTRACTABLE] is True
    with pytest.raises(AttributeSensitive):
        private[Attribute.VALUE]


def test_signatures_verify_with_libsodium(hsm: Pkcs11Keys) -> None:
    entry = new_entry(hsm, T0)
    signer = load_signer(hsm, entry)
    message = b"any message"
    signature = signer.sign(message)
    assert len(signature) == 64
    nacl.signing.VerifyKey(entry.raw_public_key).verify(message, signature)
    verify_signature(entry.raw_public_key, message, signature)


def test_a_key_reloaded_in_a_new_session_signs_the_same(module: str, hsm: Pkcs11Keys) -> None:
    entry = new_entry(hsm, T0)
    first = load_signer(hsm, entry)
    message = b"Ed25519 is deterministic"
    expected = first.sign(message)
    later = Pkcs11Keys(module, TOKEN, USER_PIN)
    try:
        assert later.load(entry.kid).sign(message) == expected
    finally:
        later.close()


def test_signing_from_many_threads_is_serialised(hsm: Pkcs11Keys) -> None:
    entry = new_entry(hsm, T0)
    signer = load_signer(hsm, entry)
    expected = [sign_permit(signer, permit(index)) for index in range(64)]
    results: dict[int, str] = {}

    def sign_some(offset: int) -> None:
        for index in range(offset, 64, 8):
            results[index] = sign_permit(signer, permit(index), entry)

    threads = [threading.Thread(target=sign_some, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[index] for index in range(64)] == expected


def test_a_lost_session_is_reported_then_reopened(hsm: Pkcs11Keys) -> None:
    entry = new_entry(hsm, T0)
    signer = load_signer(hsm, entry)
    session = hsm._session
    assert session is not None
    session.close()  # as if the HSM had dropped it
    with pytest.raises(HsmUnavailable) as caught:
        signer.sign(b"message")
    assert caught.value.code == "hsm_unavailable"
    assert isinstance(caught.value.__cause__, pkcs11.PKCS11Error)
    verify_signature(signer.public_key, b"message", signer.sign(b"message"))


async def test_a_kid_absent_from_the_token_is_a_missing_private_key(
    registry: Registry, hsm: Pkcs11Keys
) -> None:
    elsewhere = await add_key(
        registry, key_entry(InProcessKey.generate(), not_before=T0), actor="test", at=T0
    )
    with pytest.raises(PrivateKeyMissing) as caught:
        load_signer(hsm, elsewhere)
    assert caught.value.code == "private_key_missing"
    # First-run set-up does not hide it with a new key.
    assert await ensure_signing_key(registry, hsm, now=AT, actor="test") == (elsewhere, False)
    with pytest.raises(PrivateKeyMissing) as direct:
        hsm.load("0badc0de")
    assert direct.value.code == "private_key_missing"


async def test_first_run_creates_the_key_in_the_token(registry: Registry, hsm: Pkcs11Keys) -> None:
    entry, created = await ensure_signing_key(registry, hsm, now=T0, actor="test")
    assert created
    assert await ensure_signing_key(registry, hsm, now=T0 + 10, actor="test") == (entry, False)
    assert load_signer(hsm, entry).kid.hex() == entry.kid


def test_a_wrong_pin_is_refused(module: str) -> None:
    keys = Pkcs11Keys(module, PIN_TOKEN, "0000")
    with pytest.raises(HsmLoginFailed) as caught:
        keys.generate()
    assert caught.value.code == "hsm_login_failed"
    assert isinstance(caught.value, HsmUnavailable)  # one 503 rule covers both
    assert isinstance(caught.value.__cause__, pkcs11.PKCS11Error)


@pytest.mark.parametrize(
    ("module_path", "token"),
    [(None, "absent"), ("/nonexistent/libpkcs11.so", TOKEN)],
    ids=["missing token", "missing module"],
)
def test_a_missing_token_or_module_is_unavailable(
    module: str, module_path: str | None, token: str
) -> None:
    keys = Pkcs11Keys(module_path or module, token, USER_PIN)
    with pytest.raises(HsmUnavailable) as caught:
        keys.load("0badc0de")
    assert caught.value.code == "hsm_unavailable"
    assert isinstance(caught.value.__cause__, pkcs11.PKCS11Error)


def test_settings_choose_the_backend(tmp_path: Path, module: str) -> None:
    file_keys = private_keys("file", tmp_path, passphrase=b"secret")
    assert isinstance(file_keys, FileKeys)
    kid = file_keys.generate().kid.hex()
    assert b"ENCRYPTED" in (tmp_path / f"{kid}.pem").read_bytes()
    hsm = private_keys(
        "pkcs11", tmp_path, pkcs11_module=module, pkcs11_token=TOKEN, pkcs11_pin=USER_PIN
    )
    assert hsm is shared_pkcs11_keys(module, TOKEN, USER_PIN)  # one session per process
    with pytest.raises(HsmUnavailable) as caught:
        private_keys("pkcs11", tmp_path, pkcs11_module=module, pkcs11_token=TOKEN)
    assert caught.value.code == "hsm_unavailable"
    with pytest.raises(ValueError, match="unknown signer backend"):
        private_keys("vault", tmp_path)  # type: ignore[arg-type]


async def test_the_issuer_signs_with_the_token(
    registry: Registry, tmp_path: Path, hsm: Pkcs11Keys
) -> None:
    entry = await generate_key(registry, hsm, now=NOW - 86_400, actor="test")
    await register(registry)
    (record,) = await Issuer(registry, hsm, POLICY).issue(
        [request(Category.DOMESTIC_WORKER)], actor="test", now=NOW
    )
    assert record.kid == entry.kid
    decision = (await verifier(registry, INSIDE)).verify(record.token, "shumaisi", INSIDE)
    assert decision.outcome is Outcome.VALID


def test_a_forked_worker_opens_its_own_session(hsm: Pkcs11Keys) -> None:
    entry = new_entry(hsm, T0)
    signer = load_signer(hsm, entry)
    expected = signer.sign(b"message")  # the parent's session is open before the fork
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.write(write_end, signer.sign(b"message"))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == expected
    assert os.waitstatus_to_exitcode(status) == 0
    assert signer.sign(b"message") == expected  # the parent's session still works
