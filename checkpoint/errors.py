"""The one exception family of Checkpoint: every failure has a stable machine `code`."""

from __future__ import annotations

from typing import ClassVar

from checkpoint.model import Outcome


class CheckpointError(Exception):
    """Base of every error Checkpoint raises on purpose.

    `code` is stable and machine-readable; tests and clients compare it, never the text.
    """

    code: ClassVar[str] = "checkpoint_error"
    message_en: ClassVar[str] = "Checkpoint error."
    message_ar: ClassVar[str] = "خطأ في النظام."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(detail or self.message_en)


# --- Reasons a token is refused: each becomes a Decision, never an HTTP error. ---


class RejectReason(CheckpointError):
    """A reason a presented token does not grant entry; `outcome` says how firmly."""

    outcome: ClassVar[Outcome] = Outcome.INVALID


class TokenTooLong(RejectReason):
    code = "token_too_long"
    message_en = "The code is too long to be a permit."
    message_ar = "الرمز أطول من أن يكون تصريحًا."


class UnknownPrefix(RejectReason):
    code = "unknown_prefix"
    message_en = "This is not a Checkpoint permit."
    message_ar = "هذا ليس تصريحًا صادرًا من النظام."


class UnsupportedVersion(RejectReason):
    code = "unsupported_version"
    message_en = "This permit format version is not supported."
    message_ar = "إصدار صيغة التصريح غير مدعوم."


class BadEncoding(RejectReason):
    code = "bad_encoding"
    message_en = "The permit code is damaged (invalid characters)."
    message_ar = "رمز التصريح تالف (أحرف غير صالحة)."


class MalformedEnvelope(RejectReason):
    code = "malformed_envelope"
    message_en = "The permit code is damaged (incomplete)."
    message_ar = "رمز التصريح تالف (غير مكتمل)."


class UnknownKey(RejectReason):
    code = "unknown_key"
    message_en = "The permit was signed with an unknown key."
    message_ar = "التصريح موقّع بمفتاح غير معروف."


class KeyRevoked(RejectReason):
    code = "key_revoked"
    message_en = "The key that signed this permit has been withdrawn."
    message_ar = "تم سحب المفتاح الذي وقّع هذا التصريح."


class BadSignature(RejectReason):
    code = "bad_signature"
    message_en = "The permit's signature is not valid: it may be forged or altered."
    message_ar = "توقيع التصريح غير صالح: قد يكون مزورًا أو معدّلًا."


class MalformedPayload(RejectReason):
    code = "malformed_payload"
    message_en = "The permit's content cannot be read."
    message_ar = "تعذّرت قراءة محتوى التصريح."


class TrailingBytes(RejectReason):
    code = "trailing_bytes"
    message_en = "The permit's content has unexpected extra data."
    message_ar = "يحتوي التصريح على بيانات زائدة غير متوقعة."


class InvalidField(RejectReason):
    code = "invalid_field"
    message_en = "A field of the permit has a wrong type or value."
    message_ar = "أحد حقول التصريح بنوع أو قيمة غير صحيحة."


class OutsideSigningWindow(RejectReason):
    code = "outside_signing_window"
    message_en = "The permit was issued outside its key's signing period."
    message_ar = "صدر التصريح خارج فترة التوقيع المعتمدة لمفتاحه."


class NotYetValid(RejectReason):
    code = "not_yet_valid"
    message_en = "The permit is not valid yet."
    message_ar = "التصريح لم يبدأ سريانه بعد."


class Expired(RejectReason):
    code = "expired"
    message_en = "The permit has expired."
    message_ar = "انتهت صلاحية التصريح."


class UnknownSeason(RejectReason):
    code = "unknown_season"
    message_en = "The permit is for a season this checkpoint does not know."
    message_ar = "التصريح لموسم غير معروف لدى نقطة التفتيش."


class SeasonClosed(RejectReason):
    code = "season_closed"
    message_en = "The permit's season is not open now."
    message_ar = "موسم التصريح غير مفتوح حاليًا."


class CategoryNotAdmitted(RejectReason):
    code = "category_not_admitted"
    message_en = "This permit category is not admitted at this checkpoint."
    message_ar = "فئة هذا التصريح غير مسموح بها في نقطة التفتيش هذه."


class EntryPointNotAdmitted(RejectReason):
    code = "entry_point_not_admitted"
    message_en = "This permit is not valid at this entry point."
    message_ar = "هذا التصريح غير صالح في منفذ الدخول هذا."


class CheckpointClosed(RejectReason):
    code = "checkpoint_closed"
    message_en = "This category is not admitted at this checkpoint at this hour."
    message_ar = "هذه الفئة غير مسموح بدخولها من هذه النقطة في هذه الساعة."


class Revoked(RejectReason):
    code = "revoked"
    message_en = "The permit has been withdrawn."
    message_ar = "تم إلغاء التصريح."


class RevocationStale(RejectReason):
    outcome = Outcome.INDETERMINATE
    code = "revocation_stale"
    message_en = "Withdrawal data is out of date: check manually."
    message_ar = "بيانات الإلغاء غير محدّثة: يلزم التحقق اليدوي."


class KeysNotLoaded(RejectReason):
    outcome = Outcome.INDETERMINATE
    code = "keys_not_loaded"
    message_en = "The verification keys are not loaded: check manually."
    message_ar = "مفاتيح التحقق غير محمّلة: يلزم التحقق اليدوي."


REJECT_REASONS: tuple[type[RejectReason], ...] = (
    TokenTooLong,
    UnknownPrefix,
    UnsupportedVersion,
    BadEncoding,
    MalformedEnvelope,
    UnknownKey,
    KeyRevoked,
    BadSignature,
    MalformedPayload,
    TrailingBytes,
    InvalidField,
    OutsideSigningWindow,
    NotYetValid,
    Expired,
    UnknownSeason,
    SeasonClosed,
    CategoryNotAdmitted,
    EntryPointNotAdmitted,
    CheckpointClosed,
    Revoked,
    RevocationStale,
    KeysNotLoaded,
)
"""Every reason the core verifier can give, in declaration order (used by docs and tests).

Written out rather than read from `__subclasses__()`, which depends on where a class sits;
tests/checkpoint/test_errors.py requires every concrete reason here or in EDGE_REASONS.
"""


# --- Reasons decided at the edge, after the core's VALID: they need shared state. ---


class DuplicateEntry(RejectReason):
    code = "duplicate_entry"
    message_en = "This permit was already used to enter this zone: check the holder."
    message_ar = "استُخدم هذا التصريح للدخول إلى هذه المنطقة من قبل: تحقق من حامله."


class DuplicateCheckUnavailable(RejectReason):
    outcome = Outcome.INDETERMINATE
    code = "duplicate_check_unavailable"
    message_en = "The repeated-entry check is unavailable: check manually."
    message_ar = "التحقق من تكرار الدخول غير متاح: يلزم التحقق اليدوي."


EDGE_REASONS: tuple[type[RejectReason], ...] = (DuplicateEntry, DuplicateCheckUnavailable)
"""Reasons the service adds to a core decision (anti-passback)."""


# --- Reasons a dispatch manifest as a whole is refused (its members are then not listed). ---


class ManifestUnreadable(RejectReason):
    code = "manifest_unreadable"
    message_en = "This code is not a readable dispatch manifest."
    message_ar = "هذا الرمز ليس كشف تفويج مقروءًا."


class ManifestNotAuthentic(RejectReason):
    code = "manifest_not_authentic"
    message_en = "The manifest's signature is not valid: it may be forged or altered."
    message_ar = "توقيع الكشف غير صالح: قد يكون مزورًا أو معدّلًا."


class ManifestNotYetValid(RejectReason):
    code = "manifest_not_yet_valid"
    message_en = "The dispatch order's window has not begun."
    message_ar = "لم تبدأ نافذة أمر التفويج بعد."


class ManifestExpired(RejectReason):
    code = "manifest_expired"
    message_en = "The dispatch order's window has ended."
    message_ar = "انتهت نافذة أمر التفويج."


class ManifestOtherCheckpoint(RejectReason):
    code = "manifest_other_checkpoint"
    message_en = "The dispatch order's route does not pass this checkpoint."
    message_ar = "مسار أمر التفويج لا يمر بنقطة التفتيش هذه."


class ManifestCancelled(RejectReason):
    code = "manifest_cancelled"
    message_en = "The dispatch order was cancelled or replaced: ask for the current list."
    message_ar = "أُلغي أمر التفويج أو استُبدل: اطلب الكشف الحالي."


MANIFEST_REASONS: tuple[type[RejectReason], ...] = (
    ManifestUnreadable,
    ManifestNotAuthentic,
    ManifestNotYetValid,
    ManifestExpired,
    ManifestOtherCheckpoint,
    ManifestCancelled,
)
"""Reasons a manifest is refused whole; KeysNotLoaded and RevocationStale apply to it too."""


# --- Errors of configuration or of a caller: raised, never turned into a Decision. ---


class UnknownCheckpoint(CheckpointError):
    code = "unknown_checkpoint"
    message_en = "No checkpoint has this code."
    message_ar = "لا توجد نقطة تفتيش بهذا الرمز."


class PolicyError(CheckpointError):
    code = "invalid_policy"
    message_en = "The policy file is not valid."
    message_ar = "ملف السياسة غير صالح."


class KeyringError(CheckpointError):
    """Base of signing-key and keyring errors."""

    code = "key_error"
    message_en = "Signing key error."
    message_ar = "خطأ في مفتاح التوقيع."


class WeakKey(KeyringError):
    code = "weak_key"
    message_en = "The public key is of low order or not canonically encoded."
    message_ar = "المفتاح العام ضعيف أو غير مرمّز بالصيغة القياسية."


class DuplicateKeyId(KeyringError):
    code = "duplicate_kid"
    message_en = "Two keys share the same key id."
    message_ar = "مفتاحان يحملان المعرّف نفسه."


class BadKeyring(KeyringError):
    code = "bad_keyring"
    message_en = "The keyring file is not valid."
    message_ar = "ملف حلقة المفاتيح غير صالح."


class KeyNotFound(KeyringError):
    code = "key_not_found"
    message_en = "No key has this id."
    message_ar = "لا يوجد مفتاح بهذا المعرّف."


class PrivateKeyMissing(KeyringError):
    code = "private_key_missing"
    message_en = "The private key of the signing key is not where the key store keeps it."
    message_ar = "المفتاح الخاص لمفتاح التوقيع غير موجود في مخزن المفاتيح."


class KeyCannotSign(KeyringError):
    code = "key_cannot_sign"
    message_en = "This key is retired or revoked, or the time is outside its signing window."
    message_ar = "هذا المفتاح متقاعد أو ملغى، أو الوقت خارج فترة التوقيع."


class BadPrivateKey(KeyringError):
    code = "bad_private_key"
    message_en = "The private key cannot be loaded (wrong format or passphrase)."
    message_ar = "تعذّر تحميل المفتاح الخاص (صيغة أو كلمة مرور خاطئة)."


class PermitTooLarge(CheckpointError):
    code = "permit_too_large"
    message_en = "The permit does not fit the token size limit."
    message_ar = "التصريح يتجاوز الحد الأقصى لحجم الرمز."


class ManifestTooLarge(CheckpointError):
    code = "manifest_too_large"
    message_en = "The manifest does not fit one QR code."
    message_ar = "الكشف لا يتسع في رمز QR واحد."


# --- Signed offline artifacts (bundle, status-list tokens): refused by a device's check. ---


class OfflineTrustError(CheckpointError):
    """Base of the reasons a signed offline bundle or status-list token is refused; a
    device that refuses one decides nothing from it (MANUAL CHECK)."""

    code = "offline_trust_error"
    message_en = "The offline trust data cannot be used."
    message_ar = "تعذّر استخدام بيانات الثقة دون اتصال."


class MalformedJws(OfflineTrustError):
    code = "jws_malformed"
    message_en = "The signed offline data is damaged (not a compact JWS)."
    message_ar = "البيانات الموقّعة دون اتصال تالفة (ليست JWS مضغوطًا)."


class UnsupportedJwsAlgorithm(OfflineTrustError):
    code = "jws_unsupported_alg"
    message_en = "The signed offline data uses an algorithm other than EdDSA."
    message_ar = "البيانات الموقّعة دون اتصال تستخدم خوارزمية غير EdDSA."


class WrongJwsType(OfflineTrustError):
    code = "jws_wrong_type"
    message_en = "The signed offline data is not of the expected type."
    message_ar = "البيانات الموقّعة دون اتصال ليست من النوع المتوقع."


class UnknownTrustKey(OfflineTrustError):
    code = "trust_key_unknown"
    message_en = "The offline data was signed with a trust-list key this device does not know."
    message_ar = "البيانات دون اتصال موقّعة بمفتاح قائمة ثقة لا يعرفه هذا الجهاز."


class TrustKeyRevoked(OfflineTrustError):
    code = "trust_key_revoked"
    message_en = "The trust-list key that signed the offline data has been withdrawn."
    message_ar = "تم سحب مفتاح قائمة الثقة الذي وقّع البيانات دون اتصال."


class TrustKeyOutsideWindow(OfflineTrustError):
    code = "trust_key_outside_window"
    message_en = "The offline data was signed outside its trust-list key's signing period."
    message_ar = "وُقّعت البيانات دون اتصال خارج فترة التوقيع لمفتاح قائمة الثقة."


class BadJwsSignature(OfflineTrustError):
    code = "jws_bad_signature"
    message_en = "The offline data's signature is not valid: it may be altered."
    message_ar = "توقيع البيانات دون اتصال غير صالح: قد تكون معدّلة."


class MalformedClaims(OfflineTrustError):
    code = "jws_malformed_claims"
    message_en = "The signed offline data has missing or wrong fields."
    message_ar = "البيانات الموقّعة دون اتصال ناقصة أو حقولها غير صحيحة."


class JwsNotYetValid(OfflineTrustError):
    code = "jws_not_yet_valid"
    message_en = "The offline data is dated in the future: check the device's clock."
    message_ar = "البيانات دون اتصال مؤرخة في المستقبل: تحقق من ساعة الجهاز."


class JwsExpired(OfflineTrustError):
    code = "jws_expired"
    message_en = "The offline data has expired: connect to refresh it."
    message_ar = "انتهت صلاحية البيانات دون اتصال: اتصل بالشبكة لتحديثها."


OFFLINE_TRUST_ERRORS: tuple[type[OfflineTrustError], ...] = (
    MalformedJws,
    UnsupportedJwsAlgorithm,
    WrongJwsType,
    UnknownTrustKey,
    TrustKeyRevoked,
    TrustKeyOutsideWindow,
    BadJwsSignature,
    MalformedClaims,
    JwsNotYetValid,
    JwsExpired,
)
"""Every reason a device's check refuses offline trust data, in the order it checks."""
