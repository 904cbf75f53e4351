"""Refusals the HTTP layer itself makes, each with its own stable code (the domain's: issuer)."""

from __future__ import annotations

from checkpoint.errors import CheckpointError


class RequestRefused(CheckpointError):
    """A well-formed request the route refuses before any domain rule reads it (422)."""

    code = "request_refused"
    message_en = "The request cannot be carried out."
    message_ar = "لا يمكن تنفيذ الطلب."


class CrossingInFuture(RequestRefused):
    code = "crossing_in_future"
    message_en = "The border crossing time is in the future."
    message_ar = "وقت عبور الحدود في المستقبل."


class RevocationTargetRequired(RequestRefused):
    code = "revocation_target_required"
    message_en = "Name exactly one of permit_id, holder or establishment."
    message_ar = "حدّد واحدًا فقط من: رقم التصريح أو صاحب التصريح أو المنشأة."


class ClassNotApplicable(RequestRefused):
    code = "class_not_applicable"
    message_en = "Only an Umrah company has a class."
    message_ar = "التصنيف لشركات العمرة فقط."


class UnreadableImage(RequestRefused):
    code = "unreadable_image"
    message_en = "The body is not a readable image of its media type."
    message_ar = "المحتوى ليس صورة مقروءة من النوع المرسل."


class SinceSeqTooOld(RequestRefused):
    code = "since_seq_too_old"
    message_en = "No delta reaches back to this sequence number: take the full bundle."
    message_ar = "لا يوجد تحديث جزئي منذ هذا الرقم التسلسلي: نزّل الحزمة الكاملة."


class SinceSeqAhead(RequestRefused):
    code = "since_seq_ahead"
    message_en = "This sequence number is past the registry's: take the full bundle."
    message_ar = "هذا الرقم التسلسلي يتجاوز رقم السجل: نزّل الحزمة الكاملة."


class ScanCheckpointMismatch(RequestRefused):
    code = "scan_checkpoint_mismatch"
    message_en = "A synced scan names another checkpoint than this scanner's."
    message_ar = "أحد الفحوص المُزامنة يذكر نقطة تفتيش غير نقطة هذا الماسح."


class ScanInFuture(RequestRefused):
    code = "scan_in_future"
    message_en = "A synced scan is dated in the future: check the device's clock."
    message_ar = "أحد الفحوص المُزامنة مؤرخ في المستقبل: تحقق من ساعة الجهاز."


class OfflineArtifactMissing(CheckpointError):
    """No signed offline artifact of this name in the registry (404)."""

    code = "offline_artifact_missing"
    message_en = "There is no signed offline data of this name."
    message_ar = "لا توجد بيانات موقّعة دون اتصال بهذا الاسم."


class StatusListTokenMissing(OfflineArtifactMissing):
    code = "status_list_token_missing"
    message_en = "No signed token of this status list yet (no permit in it, or not built)."
    message_ar = "لا يوجد رمز موقّع لقائمة الحالة هذه بعد."


class BundleNotBuilt(CheckpointError):
    """No node holding the trust-list key has stored a bundle yet (503)."""

    code = "bundle_not_built"
    message_en = "The offline bundle is not built yet: try again shortly."
    message_ar = "حزمة العمل دون اتصال لم تُجهّز بعد: أعد المحاولة بعد قليل."
