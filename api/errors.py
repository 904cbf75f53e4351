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
