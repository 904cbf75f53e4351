"""Errors of the registry and of the issuer's signing keys, each with a stable machine code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from checkpoint.errors import CheckpointError, KeyringError


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


class IdempotencyKeyReused(CheckpointError):
    """The key was used before with another body (the Idempotency-Key draft: 422)."""

    code = "idempotency_key_reused"
    message_en = "This idempotency key was already used for a different request: use a new key."
    message_ar = "مفتاح عدم التكرار هذا استُخدم سابقًا لطلب مختلف: استخدم مفتاحًا جديدًا."


class IdempotencyInProgress(CheckpointError):
    """A request with the same key is still being processed (the draft: 409)."""

    code = "idempotency_in_progress"
    message_en = "A request with this idempotency key is still being processed: retry shortly."
    message_ar = "طلب بمفتاح عدم التكرار هذا ما زال قيد المعالجة: أعد المحاولة بعد قليل."


class LastSigningKey(CheckpointError):
    code = "last_signing_key"
    message_en = "This is the last key that can sign: create another first, or force it."
    message_ar = "هذا آخر مفتاح قادر على التوقيع: أنشئ مفتاحًا آخر أولًا أو افرض الإلغاء."


class CredentialNotFound(CheckpointError):
    code = "credential_not_found"
    message_en = "No credential has this id."
    message_ar = "لا توجد بيانات اعتماد بهذا المعرّف."


class SchemaTooNew(CheckpointError):
    code = "schema_too_new"
    message_en = "The registry database was written by a newer version: upgrade this program."
    message_ar = "قاعدة بيانات السجل أُنشئت بإصدار أحدث: يلزم تحديث البرنامج."


class RegistryUnavailable(CheckpointError):
    """The registry cannot be reached; `outcome_unknown`: it failed during a write's COMMIT,
    so the change may or may not have been made (the detail says which)."""

    code = "registry_unavailable"
    message_en = "The permit registry is unavailable: try again shortly."
    message_ar = "سجل التصاريح غير متاح حاليًا: حاول مرة أخرى بعد قليل."

    def __init__(self, detail: str | None = None, *, outcome_unknown: bool = False) -> None:
        super().__init__(detail)
        self.outcome_unknown = outcome_unknown


# --- Refusals to issue: the request is well-formed but the rules say no. ---


class IssueRefused(CheckpointError):
    """Base of the eligibility refusals; each subclass is one rule."""

    code = "issue_refused"
    message_en = "The permit cannot be issued."
    message_ar = "لا يمكن إصدار التصريح."

    item: int | None = None
    """Position of the refused request in a batch, when there was one."""


@contextmanager
def item(position: int | None) -> Iterator[None]:
    """The one place a refusal learns which request of a batch it concerns."""
    try:
        yield
    except IssueRefused as refusal:
        refusal.item = position
        raise


class MixedChannels(IssueRefused):
    code = "mixed_channels"
    message_en = "A batch holds permits of one channel only."
    message_ar = "الدفعة الواحدة تضم تصاريح قناة واحدة فقط."


class CategoryNotInChannel(IssueRefused):
    code = "category_not_in_channel"
    message_en = "This portal cannot issue permits of this category."
    message_ar = "لا يمكن لهذه المنصة إصدار تصاريح من هذه الفئة."


class ChannelNotAllowed(IssueRefused):
    code = "channel_not_allowed"
    message_en = "This credential may not issue through this portal."
    message_ar = "بيانات الاعتماد هذه لا تخوّل الإصدار عبر هذه المنصة."


class EstablishmentNotAllowed(IssueRefused):
    code = "establishment_not_allowed"
    message_en = "This credential issues only for its own establishment or Umrah company."
    message_ar = "بيانات الاعتماد هذه لا تخوّل الإصدار إلا لمنشأتها أو شركة العمرة التابعة لها."


class InvalidNationalId(IssueRefused):
    code = "invalid_national_id"
    message_en = "The Saudi national ID number is not valid (10 digits, starting with 1)."
    message_ar = "رقم الهوية الوطنية غير صحيح (10 أرقام تبدأ بالرقم 1)."


class InvalidIqama(IssueRefused):
    code = "invalid_iqama"
    message_en = "The iqama (residence) number is not valid (10 digits, starting with 2)."
    message_ar = "رقم الإقامة غير صحيح (10 أرقام تبدأ بالرقم 2)."


class DocumentReferenceRequired(IssueRefused):
    code = "document_reference_required"
    message_en = "A supporting document reference is required for this category."
    message_ar = "يلزم إرفاق رقم المستند الداعم لهذه الفئة."


class SeasonNotFound(IssueRefused):
    code = "season_not_found"
    message_en = "No season has this id."
    message_ar = "لا يوجد موسم بهذا المعرّف."


class CategoryNotInSeason(IssueRefused):
    code = "category_not_in_season"
    message_en = "This season has no permits of this category."
    message_ar = "لا تصدر في هذا الموسم تصاريح من هذه الفئة."


class InvalidWindow(IssueRefused):
    code = "invalid_window"
    message_en = "The permit must end after it starts."
    message_ar = "يجب أن ينتهي التصريح بعد بدايته."


class WindowOutsideSeason(IssueRefused):
    code = "window_outside_season"
    message_en = "The permit's validity must lie inside the season."
    message_ar = "يجب أن تقع مدة صلاحية التصريح داخل الموسم."


class EntryPointNotAdmitting(IssueRefused):
    code = "entry_point_not_admitting"
    message_en = "A named entry point does not exist or does not admit this category."
    message_ar = "منفذ الدخول المحدد غير موجود أو لا يسمح بهذه الفئة."


# --- The rules of the source articles (Absher, Muqeem, Nusuk; issue #5). ---


class SponsorRequired(IssueRefused):
    code = "sponsor_required"
    message_en = "Domestic workers and dependents need their sponsor's ID number."
    message_ar = "يلزم رقم هوية الكفيل للعمالة المنزلية والتابعين."


class InvalidSponsor(IssueRefused):
    code = "invalid_sponsor"
    message_en = "The sponsor's ID is not a valid Saudi national ID or iqama number."
    message_ar = "رقم هوية الكفيل ليس رقم هوية وطنية أو إقامة صحيحًا."


class EstablishmentRequired(IssueRefused):
    code = "establishment_required"
    message_en = "This permit must name its registered establishment or Umrah company."
    message_ar = "يجب أن يحدد هذا التصريح المنشأة أو شركة العمرة المسجلة."


class EstablishmentNotRegistered(IssueRefused):
    code = "establishment_not_registered"
    message_en = "The establishment or Umrah company is not registered for this portal."
    message_ar = "المنشأة أو شركة العمرة غير مسجلة في هذه المنصة."


class EstablishmentNotInMakkah(IssueRefused):
    code = "establishment_not_in_makkah"
    message_en = "Only establishments based in Makkah get this permit."
    message_ar = "لا يُمنح هذا التصريح إلا لمنشآت مقرها مكة المكرمة."


class BirthDateRequired(IssueRefused):
    code = "birth_date_required"
    message_en = "Umrah and Rawdah permits need the pilgrim's date of birth."
    message_ar = "تصاريح العمرة والروضة تتطلب تاريخ ميلاد المعتمر."


class UnaccompaniedMinor(IssueRefused):
    code = "unaccompanied_minor"
    message_en = "A pilgrim under the minimum age needs a companion's permit."
    message_ar = "المعتمر دون السن المحددة يلزمه تصريح مرافق."


class CompanionNotValid(IssueRefused):
    code = "companion_not_valid"
    message_en = "The companion's permit must exist, be active, and be an adult's Nusuk permit."
    message_ar = "يجب أن يكون تصريح المرافق موجودًا وساريًا وتصريح نسك لشخص بالغ."


class StayTooLong(IssueRefused):
    code = "stay_too_long"
    message_en = "The permit ends after the longest stay allowed from the entry into the Kingdom."
    message_ar = "ينتهي التصريح بعد أقصى مدة إقامة مسموحة من تاريخ الدخول إلى المملكة."


class DeparturesMissing(IssueRefused):
    code = "departures_missing"
    message_en = "Too few of this company's arrived pilgrims have departed to admit new pilgrims."
    message_ar = "لم يغادر العدد المطلوب من معتمري الشركة القادمين للسماح بمعتمرين جدد."

    missing: int = 0
    """How many more departures must be recorded before new pilgrims' permits are issued."""


class AmendMismatch(IssueRefused):
    code = "amend_mismatch"
    message_en = "An amended permit keeps the holder and the portal of the permit it replaces."
    message_ar = "التصريح المعدّل يحتفظ بصاحب التصريح الأصلي وبالمنصة نفسها."


class EstablishmentExists(CheckpointError):
    code = "establishment_exists"
    message_en = "An establishment or Umrah company with this id is already registered."
    message_ar = "توجد منشأة أو شركة عمرة مسجلة بهذا المعرّف."


class NotArrived(CheckpointError):
    code = "not_arrived"
    message_en = "No entry into the Kingdom is recorded for this holder."
    message_ar = "لا يوجد دخول مسجل إلى المملكة لصاحب هذا الرقم."


# --- The hardware security module holding the signing keys (CHECKPOINT_SIGNER=pkcs11). ---


class HsmUnavailable(KeyringError):
    code = "hsm_unavailable"
    message_en = "The hardware security module holding the signing keys cannot be reached."
    message_ar = "وحدة أمان الأجهزة التي تحفظ مفاتيح التوقيع غير متاحة."


class HsmLoginFailed(HsmUnavailable):
    code = "hsm_login_failed"
    message_en = "The hardware security module refused the configured PIN."
    message_ar = "رفضت وحدة أمان الأجهزة رمز PIN المضبوط."


# --- Holder blocks, establishment suspensions and strict input (issue #13). ---


class HolderBlocked(IssueRefused):
    code = "holder_blocked"
    message_en = "This holder is blocked: no permit is issued to them until an admin lifts it."
    message_ar = "صاحب هذا الرقم محظور: لا تصدر له تصاريح حتى يرفع المشرف الحظر."


class EstablishmentSuspended(IssueRefused):
    code = "establishment_suspended"
    message_en = "This establishment or Umrah company is suspended: no permit is issued for it."
    message_ar = "هذه المنشأة أو شركة العمرة موقوفة: لا تصدر لها تصاريح."


class SponsorIsHolder(IssueRefused):
    code = "sponsor_is_holder"
    message_en = "The sponsor must be another person than the permit's holder."
    message_ar = "يجب أن يكون الكفيل شخصًا غير صاحب التصريح."


class BirthDateInFuture(IssueRefused):
    code = "birth_date_in_future"
    message_en = "The date of birth is after today."
    message_ar = "تاريخ الميلاد بعد تاريخ اليوم."


class BirthDateTooOld(IssueRefused):
    code = "birth_date_too_old"
    message_en = "The date of birth is more than 130 years ago."
    message_ar = "تاريخ الميلاد قبل أكثر من 130 سنة."


class CrossingTooEarly(CheckpointError):
    code = "crossing_too_early"
    message_en = "The reported border crossing is dated before the earliest date accepted."
    message_ar = "تاريخ عبور الحدود المُبلّغ عنه سابق لأقدم تاريخ مقبول."


class BlockChoiceRequired(CheckpointError):
    code = "block_choice_required"
    message_en = "Revoking every permit of a holder or establishment needs `block`: true or false."
    message_ar = "إلغاء جميع تصاريح صاحب رقم أو منشأة يتطلب تحديد `block`: نعم أو لا."


class NotBlocked(CheckpointError):
    code = "not_blocked"
    message_en = "This holder is not blocked, or this establishment is not suspended."
    message_ar = "صاحب هذا الرقم غير محظور، أو هذه المنشأة غير موقوفة."


class EstablishmentNotFound(CheckpointError):
    code = "establishment_not_found"
    message_en = "No establishment or Umrah company is registered with this id."
    message_ar = "لا توجد منشأة أو شركة عمرة مسجلة بهذا المعرّف."


# --- One programme per pilgrim, and slots that would be cancelled (issue #13). ---


class ProgrammeOverlap(IssueRefused):
    code = "programme_overlap"
    message_en = (
        "The pilgrim already holds an active Nusuk permit for an overlapping time: amend it "
        "or replace the programme."
    )
    message_ar = "لدى المعتمر تصريح نسك ساري في وقت متداخل: عدّل التصريح السابق أو استبدل البرنامج."


class PermitExists(IssueRefused):
    code = "permit_exists"
    message_en = "The holder already has an active permit of this category for this season."
    message_ar = "لدى صاحب التصريح تصريح ساري من هذه الفئة لهذا الموسم."


class ArrivalDeadlinePassed(IssueRefused):
    code = "arrival_deadline_passed"
    message_en = (
        "The slot starts too soon: the pilgrim's entry into the Kingdom is not recorded by "
        "the deadline before it, so the permit would be cancelled."
    )
    message_ar = (
        "موعد التصريح قريب جدًا: لم يُسجَّل دخول المعتمر إلى المملكة قبل المهلة المحددة، "
        "فسيُلغى التصريح."
    )


class NotAnUmrahCompany(CheckpointError):
    code = "not_an_umrah_company"
    message_en = "Only an Umrah company (registered for Nusuk) has a class."
    message_ar = "التصنيف خاص بشركات العمرة المسجلة في نسك فقط."


class InvalidCursor(CheckpointError):
    """A listing's `cursor` that none of its pages gave out (changed, cut, or another's)."""

    code = "invalid_cursor"
    message_en = "The cursor is not one a page of this listing gave out."
    message_ar = "المؤشر ليس صادرًا عن صفحة من هذه القائمة."


# --- The event feed's webhooks (issue #14). ---


class WebhookNotFound(CheckpointError):
    code = "webhook_not_found"
    message_en = "No webhook of this credential has this id."
    message_ar = "لا يوجد خطاف ويب بهذا المعرّف لبيانات الاعتماد هذه."


class TooManyWebhooks(CheckpointError):
    code = "too_many_webhooks"
    message_en = "This credential has as many webhooks as allowed: remove one first."
    message_ar = "لدى بيانات الاعتماد هذه الحد الأقصى من خطافات الويب: احذف واحدًا أولًا."


class WebhookNotAllowed(CheckpointError):
    code = "webhook_not_allowed"
    message_en = "Only an enabled issuer or admin credential receives the event feed."
    message_ar = "لا يتلقى سجل الأحداث إلا بيانات اعتماد مُصدِر أو مشرف مفعّلة."


class WebhookTargetNotAllowed(CheckpointError):
    code = "webhook_target_not_allowed"
    message_en = (
        "The webhook's address is not a public one (loopback, private, link-local or "
        "reserved): this deployment delivers to public addresses only."
    )
    message_ar = (
        "عنوان خطاف الويب ليس عنوانًا عامًا (محلي أو خاص أو محجوز): لا يسلّم هذا النشر إلا "
        "إلى العناوين العامة."
    )


class CursorAhead(CheckpointError):
    code = "cursor_ahead"
    message_en = (
        "The cursor is past the newest event: it is another deployment's, or the registry was "
        "restored from an older copy. Read on from a cursor this feed gave, or from 0."
    )
    message_ar = (
        "المؤشر بعد أحدث حدث: إما أنه من نشر آخر أو أن السجل استُعيد من نسخة أقدم. تابع القراءة "
        "من مؤشر أعطاه هذا السجل أو من 0."
    )


# --- Groups and dispatch orders (issue #17). ---


class GroupNotFound(CheckpointError):
    code = "group_not_found"
    message_en = "No group of yours has this id."
    message_ar = "لا توجد مجموعة لديك بهذا المعرّف."


class DispatchOrderNotFound(CheckpointError):
    code = "dispatch_order_not_found"
    message_en = "No dispatch order of yours has this id."
    message_ar = "لا يوجد أمر تفويج لديك بهذا المعرّف."


class ManifestCodeNotCurrent(CheckpointError):
    code = "manifest_code_not_current"
    message_en = "That manifest code is not one of the dispatch order's current codes."
    message_ar = "رمز الكشف هذا ليس من الرموز الحالية لأمر التفويج."


class DispatchRefused(IssueRefused):
    """Base of the refusals to create a group or a dispatch order; `item` names the member."""

    code = "dispatch_refused"
    message_en = "The group or dispatch order cannot be created."
    message_ar = "لا يمكن إنشاء المجموعة أو أمر التفويج."


class MemberNotOfCompany(DispatchRefused):
    code = "member_not_of_company"
    message_en = "This permit is not one of the company's active permits."
    message_ar = "هذا التصريح ليس من تصاريح الشركة السارية."


class DuplicateMember(DispatchRefused):
    code = "duplicate_member"
    message_en = "The same pilgrim is listed twice."
    message_ar = "الحاج أو المعتمر نفسه مدرج مرتين."


class LeaderNotMember(DispatchRefused):
    code = "leader_not_member"
    message_en = "The group's leader must be one of its members."
    message_ar = "يجب أن يكون قائد المجموعة أحد أعضائها."


class MemberNotInGroup(DispatchRefused):
    code = "member_not_in_group"
    message_en = "This permit is not a member of the group."
    message_ar = "هذا التصريح ليس من أعضاء المجموعة."


class MemberNotValidInWindow(DispatchRefused):
    code = "member_not_valid_in_window"
    message_en = "This member's permit is not valid throughout the dispatch window."
    message_ar = "تصريح هذا العضو غير سارٍ طوال نافذة التفويج."


class MemberNotAdmitted(DispatchRefused):
    code = "member_not_admitted"
    message_en = "This member's permit is not admitted at the route's entry point."
    message_ar = "تصريح هذا العضو غير مقبول في نقطة الدخول على المسار."


class MemberOnOtherOrder(DispatchRefused):
    code = "member_on_other_order"
    message_en = "This member is already on a dispatch order whose window overlaps."
    message_ar = "هذا العضو مدرج في أمر تفويج آخر تتداخل نافذته."


class InvalidDispatchWindow(DispatchRefused):
    code = "invalid_dispatch_window"
    message_en = "The dispatch window must start before it ends, end in the future and be short."
    message_ar = "يجب أن تبدأ نافذة التفويج قبل نهايتها وأن تنتهي في المستقبل وألا تطول."


class UnknownRouteCheckpoint(DispatchRefused):
    code = "unknown_route_checkpoint"
    message_en = "The route names no checkpoint of the policy."
    message_ar = "المسار لا يسمّي نقطة تفتيش معروفة في السياسة."


class DispatchTooLate(DispatchRefused):
    code = "dispatch_too_late"
    message_en = "Arrivals from abroad must be dispatched at least 24 hours before they arrive."
    message_ar = "يجب إدخال أمر تفويج القادمين من الخارج قبل قدومهم بـ24 ساعة على الأقل."


class OrderOtherCheckpoint(CheckpointError):
    code = "order_other_checkpoint"
    message_en = "The dispatch order's route does not pass this scanner's checkpoint."
    message_ar = "مسار أمر التفويج لا يمر بنقطة تفتيش هذا الجهاز."


class SeatNotOnCode(CheckpointError):
    code = "seat_not_on_code"
    message_en = "An absent seat is not one this manifest code lists."
    message_ar = "أحد المقاعد الغائبة ليس من مقاعد رمز الكشف هذا."


class DispatchOrderCancelled(CheckpointError):
    code = "dispatch_order_cancelled"
    message_en = "The dispatch order was cancelled: no passenger list is printed for it."
    message_ar = "أُلغي أمر التفويج: لا يُطبع له كشف ركاب."
