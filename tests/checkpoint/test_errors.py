"""Tests of checkpoint.errors: every refusal reason is registered once, in two languages."""

from __future__ import annotations

from checkpoint.errors import (
    EDGE_REASONS,
    MANIFEST_REASONS,
    REJECT_REASONS,
    CheckpointError,
    RejectReason,
)


def _subclasses(cls: type[RejectReason]) -> list[type[RejectReason]]:
    """Every subclass at any depth, not only the direct ones."""
    found: list[type[RejectReason]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _concrete(cls: type[RejectReason]) -> bool:
    """A reason a Decision can carry: it names its own code (an intermediate base does not)."""
    return "code" in vars(cls)


def test_every_concrete_reason_is_registered_once() -> None:
    registered = [*REJECT_REASONS, *EDGE_REASONS, *MANIFEST_REASONS]
    assert len(set(registered)) == len(registered)
    concrete = {cls for cls in _subclasses(RejectReason) if _concrete(cls)}
    assert set(registered) == concrete


def test_every_reason_has_a_unique_code_and_english_and_arabic_text() -> None:
    registered = [*REJECT_REASONS, *EDGE_REASONS, *MANIFEST_REASONS]
    codes = [reason.code for reason in registered]
    assert len(set(codes)) == len(codes)
    for reason in registered:
        assert reason.code != CheckpointError.code, reason
        for text in (reason.message_en, reason.message_ar):
            assert text.strip(), reason
        assert reason.message_en != CheckpointError.message_en, reason
        assert reason.message_ar != CheckpointError.message_ar, reason
        assert reason.message_en.isascii(), reason
        assert any("\u0600" <= char <= "\u06ff" for char in reason.message_ar), reason
