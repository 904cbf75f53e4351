"""Errors of the durable registry, each with a stable machine code."""

from __future__ import annotations

from checkpoint.errors import CheckpointError


class PermitNotFound(CheckpointError):
    code = "permit_not_found"
    message_en = "No permit has this id."
    message_ar = "لا يوجد تصريح بهذا المعرّف."


class PermitNotActive(CheckpointError):
    code = "permit_not_active"
    message_en = "The permit is no longer active: it was withdrawn or replaced."
    message_ar = "التصريح لم يعد ساريًا: تم إلغاؤه أو استبداله."


class InvalidDraft(CheckpointError):
    code = "invalid_draft"
    message_en = "The permit request has a field with a wrong type or value."
    message_ar = "طلب التصريح يحتوي على حقل بنوع أو قيمة غير صحيحة."


class IdempotencyConflict(CheckpointError):
    code = "idempotency_conflict"
    message_en = "This idempotency key was already used for a different request."
    message_ar = "مفتاح عدم التكرار هذا استُخدم سابقًا لطلب مختلف."


class CredentialNotFound(CheckpointError):
    code = "credential_not_found"
    message_en = "No credential has this id."
    message_ar = "لا توجد بيانات اعتماد بهذا المعرّف."


class SchemaTooNew(CheckpointError):
    code = "schema_too_new"
    message_en = "The registry database was written by a newer version: upgrade this program."
    message_ar = "قاعدة بيانات السجل أُنشئت بإصدار أحدث: يلزم تحديث البرنامج."


class RegistryUnavailable(CheckpointError):
    code = "registry_unavailable"
    message_en = "The permit registry is unavailable: try again shortly."
    message_ar = "سجل التصاريح غير متاح حاليًا: حاول مرة أخرى بعد قليل."
