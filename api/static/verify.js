// The permit verifier on the device: a port of checkpoint/token.py, checkpoint/verify.py and
// the policy checks they call (checkpoint/policy.py), with the same checks in the same order
// and the same reason codes and texts (checkpoint/errors.py). Pure, like the Python one: no
// clock (`now`, Unix seconds, is an argument) and no network. tests/api/test_verify_parity.py
// runs it in Chromium against the Python core over the vectors and thousands of mutations.

export const PREFIX = "CP1:";
const MAX_TOKEN_CHARS = 400;
const VERSION = 1;
const KID_LENGTH = 4;
const SIGNATURE_LENGTH = 64;
const MIN_ENVELOPE = 1 + KID_LENGTH + 1 + SIGNATURE_LENGTH;
const SIGNING_DOMAIN = new TextEncoder().encode("checkpoint/permit-token/v1\0");
const DAY = 86400;

const BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
const DIGITS = new Int8Array(128).fill(-1);
for (let i = 0; i < BASE45_ALPHABET.length; i++) DIGITS[BASE45_ALPHABET.charCodeAt(i)] = i;

// checkpoint.model.Category: the number in the token -> the slug.
export const CATEGORIES = [
  null,
  "domestic_worker",
  "dependent",
  "premium_residency",
  "investor",
  "citizen",
  "gcc_citizen",
  "establishment_employee",
  "seasonal_worker",
  "contract_worker",
  "umrah",
  "rawdah",
];

// checkpoint/errors.py REJECT_REASONS: code -> [outcome, English, Arabic].
export const REASONS = {
  token_too_long: ["INVALID", "The code is too long to be a permit.", "الرمز أطول من أن يكون تصريحًا."],
  unknown_prefix: ["INVALID", "This is not a Checkpoint permit.", "هذا ليس تصريحًا صادرًا من النظام."],
  unsupported_version: ["INVALID", "This permit format version is not supported.", "إصدار صيغة التصريح غير مدعوم."],
  bad_encoding: ["INVALID", "The permit code is damaged (invalid characters).", "رمز التصريح تالف (أحرف غير صالحة)."],
  malformed_envelope: ["INVALID", "The permit code is damaged (incomplete).", "رمز التصريح تالف (غير مكتمل)."],
  unknown_key: ["INVALID", "The permit was signed with an unknown key.", "التصريح موقّع بمفتاح غير معروف."],
  key_revoked: ["INVALID", "The key that signed this permit has been withdrawn.", "تم سحب المفتاح الذي وقّع هذا التصريح."],
  bad_signature: ["INVALID", "The permit's signature is not valid: it may be forged or altered.", "توقيع التصريح غير صالح: قد يكون مزورًا أو معدّلًا."],
  malformed_payload: ["INVALID", "The permit's content cannot be read.", "تعذّرت قراءة محتوى التصريح."],
  trailing_bytes: ["INVALID", "The permit's content has unexpected extra data.", "يحتوي التصريح على بيانات زائدة غير متوقعة."],
  invalid_field: ["INVALID", "A field of the permit has a wrong type or value.", "أحد حقول التصريح بنوع أو قيمة غير صحيحة."],
  outside_signing_window: ["INVALID", "The permit was issued outside its key's signing period.", "صدر التصريح خارج فترة التوقيع المعتمدة لمفتاحه."],
  not_yet_valid: ["INVALID", "The permit is not valid yet.", "التصريح لم يبدأ سريانه بعد."],
  expired: ["INVALID", "The permit has expired.", "انتهت صلاحية التصريح."],
  unknown_season: ["INVALID", "The permit is for a season this checkpoint does not know.", "التصريح لموسم غير معروف لدى نقطة التفتيش."],
  season_closed: ["INVALID", "The permit's season is not open now.", "موسم التصريح غير مفتوح حاليًا."],
  category_not_admitted: ["INVALID", "This permit category is not admitted at this checkpoint.", "فئة هذا التصريح غير مسموح بها في نقطة التفتيش هذه."],
  entry_point_not_admitted: ["INVALID", "This permit is not valid at this entry point.", "هذا التصريح غير صالح في منفذ الدخول هذا."],
  checkpoint_closed: ["INVALID", "This category is not admitted at this checkpoint at this hour.", "هذه الفئة غير مسموح بدخولها من هذه النقطة في هذه الساعة."],
  revoked: ["INVALID", "The permit has been withdrawn.", "تم إلغاء التصريح."],
  revocation_stale: ["INDETERMINATE", "Withdrawal data is out of date: check manually.", "بيانات الإلغاء غير محدّثة: يلزم التحقق اليدوي."],
  keys_not_loaded: ["INDETERMINATE", "The verification keys are not loaded: check manually.", "مفاتيح التحقق غير محمّلة: يلزم التحقق اليدوي."],
  // A dispatch manifest refused whole (checkpoint/errors.py MANIFEST_REASONS).
  manifest_unreadable: ["INVALID", "This code is not a readable dispatch manifest.", "هذا الرمز ليس كشف تفويج مقروءًا."],
  manifest_not_authentic: ["INVALID", "The manifest's signature is not valid: it may be forged or altered.", "توقيع الكشف غير صالح: قد يكون مزورًا أو معدّلًا."],
  manifest_not_yet_valid: ["INVALID", "The dispatch order's window has not begun.", "لم تبدأ نافذة أمر التفويج بعد."],
  manifest_expired: ["INVALID", "The dispatch order's window has ended.", "انتهت نافذة أمر التفويج."],
  manifest_other_checkpoint: ["INVALID", "The dispatch order's route does not pass this checkpoint.", "مسار أمر التفويج لا يمر بنقطة التفتيش هذه."],
  manifest_cancelled: ["INVALID", "The dispatch order was cancelled or replaced: ask for the current list.", "أُلغي أمر التفويج أو استُبدل: اطلب الكشف الحالي."],
  // The device's own: a browser without WebCrypto Ed25519 cannot check a signature, and
  // an unchecked permit is never accepted.
  signature_check_unavailable: [
    "INDETERMINATE",
    "This device cannot check permit signatures offline: check manually.",
    "لا يستطيع هذا الجهاز التحقق من توقيع التصاريح دون اتصال: يلزم التحقق اليدوي.",
  ],
};
export const VALID = ["VALID", "Permit valid: entry allowed.", "التصريح صالح: يُسمح بالدخول."];

// A reason a token is refused (checkpoint.errors.RejectReason): `code` says which.
export class Reject extends Error {
  constructor(code, detail) {
    super(detail || code);
    this.code = code;
  }
}

// --- token.py ----------------------------------------------------------------------------

// Strict base45 (RFC 9285): a character outside the alphabet, a dangling character, or a
// group over its range (a triplet over 65535, a final pair over 255) is bad_encoding.
export function b45decode(text) {
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c > 127) throw new Reject("bad_encoding", "non-ASCII character");
    if (DIGITS[c] < 0) throw new Reject("bad_encoding", "character outside the base45 alphabet");
  }
  if (n % 3 === 1) throw new Reject("bad_encoding", "dangling base45 character");
  const out = new Uint8Array(Math.floor(n / 3) * 2 + (n % 3 === 2 ? 1 : 0));
  let o = 0;
  let i = 0;
  for (; i + 3 <= n; i += 3) {
    const v =
      DIGITS[text.charCodeAt(i)] + 45 * DIGITS[text.charCodeAt(i + 1)] + 2025 * DIGITS[text.charCodeAt(i + 2)];
    if (v > 0xffff) throw new Reject("bad_encoding", "base45 group over 65535");
    out[o++] = v >> 8;
    out[o++] = v & 0xff;
  }
  if (i < n) {
    const v = DIGITS[text.charCodeAt(i)] + 45 * DIGITS[text.charCodeAt(i + 1)];
    if (v > 0xff) throw new Reject("bad_encoding", "final base45 pair over 255");
    out[o++] = v;
  }
  return out;
}

function codePoints(text) {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

// Length, prefix, encoding and version; the envelope's parts (nothing authenticated yet).
export function splitToken(text) {
  return splitEnvelope(text, PREFIX, SIGNING_DOMAIN, MAX_TOKEN_CHARS);
}

// splitToken for any token of this envelope (checkpoint.token.split_envelope): a permit's, or
// a dispatch manifest's with its own prefix, signing domain and length cap.
function splitEnvelope(text, prefix, domain, maxChars) {
  // Python counts code points; a string no longer than the cap in UTF-16 is not longer in them.
  if (text.length > maxChars && codePoints(text) > maxChars) {
    throw new Reject("token_too_long");
  }
  if (!text.startsWith(prefix)) throw new Reject("unknown_prefix");
  const raw = b45decode(text.slice(prefix.length));
  if (raw.length < MIN_ENVELOPE) throw new Reject("malformed_envelope");
  if (raw[0] !== VERSION) throw new Reject("unsupported_version");
  const body = raw.subarray(0, raw.length - SIGNATURE_LENGTH);
  const signed = new Uint8Array(domain.length + body.length);
  signed.set(domain);
  signed.set(body, domain.length);
  return {
    kid: raw.subarray(1, 1 + KID_LENGTH),
    payload: raw.subarray(1 + KID_LENGTH, raw.length - SIGNATURE_LENGTH),
    signature: raw.subarray(raw.length - SIGNATURE_LENGTH),
    signed,
  };
}

// --- the payload: msgpack, decoded exactly as msgspec decodes checkpoint.model.Permit ------
//
// msgspec reads as it goes: a value's bytes are read (a short input is malformed_payload,
// "truncated") before its type is judged (invalid_field), except arrays and maps, which are
// refused from their header; a string is checked as UTF-8 only where a string is expected.
// The Permit array: fewer than 8 items is refused at once; the first 9 are decoded in order;
// a 10th is refused then (forbid_unknown_fields); bytes after the array are trailing_bytes.

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const HOLDER = /^[0-9A-Z]+$/;
const U64_TOP = 2n ** 64n;

// [name, kind, min, max] in Permit's field order; kind "int", "enum" (Category) or "str".
const FIELDS = [
  ["list_id", "int", 0n, 0xffffn],
  ["index", "int", 0n, 0xffffffffn],
  ["holder", "str", 4, 20],
  ["category", "enum"],
  ["season", "int", 1n, 0xffffn],
  ["not_before", "int", 0n, 0xffffffffffn],
  ["expires", "int", 0n, 0xffffffffffn],
  ["issued_at", "int", 0n, 0xffffffffffn],
  ["entry_points", "int", 0n, 0xffffffffn],
];
const REQUIRED_FIELDS = 8;

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  take(count) {
    if (count > this.bytes.length - this.pos) throw new Reject("malformed_payload", "Input data was truncated");
    const start = this.pos;
    this.pos += count;
    return start;
  }

  u8() {
    return this.bytes[this.take(1)];
  }

  u16() {
    return this.view.getUint16(this.take(2));
  }

  u32() {
    return this.view.getUint32(this.take(4));
  }
}

function wrongType(expected, got) {
  return new Reject("invalid_field", `Expected \`${expected}\`, got \`${got}\``);
}

// One value of the kind `expected` ("array", "int", "str"): a BigInt for int, a string for
// str, the item count for an array header. Reads exactly what msgspec reads before judging.
function readValue(reader, expected) {
  const op = reader.u8();
  if (op <= 0x7f) return intValue(BigInt(op), expected);
  if (op >= 0xe0) return intValue(BigInt(op - 256), expected);
  if (op >= 0x80 && op <= 0x8f) throw wrongType(expected, "object");
  if (op >= 0x90 && op <= 0x9f) return arrayValue(op & 0x0f, expected);
  if (op >= 0xa0 && op <= 0xbf) return strValue(reader, op & 0x1f, expected);
  switch (op) {
    case 0xc0:
      throw wrongType(expected, "None");
    case 0xc1:
      throw new Reject("malformed_payload", "invalid opcode '\\xc1'");
    case 0xc2:
    case 0xc3:
      throw wrongType(expected, "bool");
    case 0xc4:
      reader.take(reader.u8());
      throw wrongType(expected, "bytes");
    case 0xc5:
      reader.take(reader.u16());
      throw wrongType(expected, "bytes");
    case 0xc6:
      reader.take(reader.u32());
      throw wrongType(expected, "bytes");
    case 0xc7:
    case 0xc8:
    case 0xc9: {
      const size = op === 0xc7 ? reader.u8() : op === 0xc8 ? reader.u16() : reader.u32();
      reader.take(1 + size);
      throw wrongType(expected, "ext");
    }
    case 0xca:
      reader.take(4);
      throw wrongType(expected, "float");
    case 0xcb:
      reader.take(8);
      throw wrongType(expected, "float");
    case 0xcc:
      return intValue(BigInt(reader.u8()), expected);
    case 0xcd:
      return intValue(BigInt(reader.u16()), expected);
    case 0xce:
      return intValue(BigInt(reader.u32()), expected);
    case 0xcf:
      return intValue(reader.view.getBigUint64(reader.take(8)), expected);
    case 0xd0:
      return intValue(BigInt(reader.view.getInt8(reader.take(1))), expected);
    case 0xd1:
      return intValue(BigInt(reader.view.getInt16(reader.take(2))), expected);
    case 0xd2:
      return intValue(BigInt(reader.view.getInt32(reader.take(4))), expected);
    case 0xd3:
      return intValue(reader.view.getBigInt64(reader.take(8)), expected);
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
      reader.take(1 + (1 << (op - 0xd4)));
      throw wrongType(expected, "ext");
    case 0xd9:
      return strValue(reader, reader.u8(), expected);
    case 0xda:
      return strValue(reader, reader.u16(), expected);
    case 0xdb:
      return strValue(reader, reader.u32(), expected);
    case 0xdc:
      return arrayValue(reader.u16(), expected);
    case 0xdd:
      return arrayValue(reader.u32(), expected);
    case 0xde:
      reader.u16();
      throw wrongType(expected, "object");
    case 0xdf:
      reader.u32();
      throw wrongType(expected, "object");
    default:
      throw new Reject("malformed_payload", `opcode ${op}`); // unreachable: every byte is named above
  }
}

function intValue(value, expected) {
  if (expected !== "int") throw wrongType(expected, "int");
  return value;
}

function arrayValue(size, expected) {
  if (expected !== "array") throw wrongType(expected, "array");
  return size;
}

function strValue(reader, size, expected) {
  const start = reader.take(size);
  if (expected !== "str") throw wrongType(expected, "str");
  try {
    return utf8.decode(reader.bytes.subarray(start, start + size));
  } catch {
    throw new Reject("malformed_payload", "Invalid UTF-8 encoded string");
  }
}

function field(reader, [name, kind, min, max]) {
  if (kind === "str") {
    const text = readValue(reader, "str");
    const length = codePoints(text);
    if (length < min || length > max || !HOLDER.test(text)) {
      throw new Reject("invalid_field", `${name}: ${JSON.stringify(text)}`);
    }
    return text;
  }
  const value = readValue(reader, "int");
  if (kind === "enum") {
    if (value < 1n || value >= BigInt(CATEGORIES.length)) throw new Reject("invalid_field", `Invalid enum value ${value}`);
    return Number(value);
  }
  if (value < min || value > max) throw new Reject("invalid_field", `${name}: ${value} out of range`);
  return Number(value);
}

// The Permit a payload holds, as checkpoint.token.decode_payload decodes it; raises Reject
// (invalid_field, malformed_payload, trailing_bytes) as it would.
export function decodePayload(payload) {
  const reader = new Reader(payload);
  const size = readValue(reader, "array");
  if (size < REQUIRED_FIELDS) {
    throw new Reject("invalid_field", `Expected \`array\` of at least length ${REQUIRED_FIELDS}, got ${size}`);
  }
  const permit = { entry_points: 0 };
  for (let i = 0; i < Math.min(size, FIELDS.length); i++) permit[FIELDS[i][0]] = field(reader, FIELDS[i]);
  if (size > FIELDS.length) {
    throw new Reject("invalid_field", `Expected \`array\` of at most length ${FIELDS.length}, got ${size}`);
  }
  if (reader.pos !== payload.length) throw new Reject("trailing_bytes");
  return permit;
}

// --- Ed25519: the acceptance of libsodium's crypto_sign_open (PyNaCl) ---------------------
//
// WebCrypto (BoringSSL in Chromium) checks the group equation [S]B = R + [k]A, as libsodium
// does (cofactorless, R compared as bytes). libsodium also refuses, before it, a
// non-canonical S (>= L), an R or A of small order (its blocklist of encodings, sign bit
// ignored) and a non-canonical A; BoringSSL may not, so these are checked here first.

const L = [
  0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

function hex(text) {
  return Uint8Array.from(text.match(/../g), (h) => parseInt(h, 16));
}

// libsodium ge25519_has_small_order's blocklist: 0, 1, the two points of order 8, p-1, p, p+1.
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].map(hex);

function scalarIsCanonical(s) {
  for (let i = 31; i >= 0; i--) {
    if (s[i] !== L[i]) return s[i] < L[i];
  }
  return false; // S = L
}

function hasSmallOrder(point) {
  return SMALL_ORDER.some((bad) => {
    for (let i = 0; i < 31; i++) if (point[i] !== bad[i]) return false;
    return (point[31] & 0x7f) === bad[31];
  });
}

// libsodium ge25519_is_canonical: y < p, whatever the sign bit.
function pointIsCanonical(point) {
  if ((point[31] & 0x7f) !== 0x7f) return true;
  for (let i = 30; i > 0; i--) if (point[i] !== 0xff) return true;
  return point[0] < 0xed;
}

// Thrown where this browser has no WebCrypto Ed25519 (before Chromium 137, say).
export class SignatureCheckUnavailable extends Error {}

const cryptoKeys = new Map(); // hex of a raw public key -> its CryptoKey, or null if refused
let ed25519Support = null;

// Whether WebCrypto here does Ed25519 (asked once, with a valid key: RFC 8032 TEST 1's).
export function ed25519Available() {
  if (!ed25519Support) {
    const probe = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    ed25519Support = (async () => {
      try {
        await crypto.subtle.importKey("raw", probe, { name: "Ed25519" }, false, ["verify"]);
        return true;
      } catch {
        return false;
      }
    })();
  }
  return ed25519Support;
}

async function cryptoKey(publicKey) {
  const id = Array.from(publicKey, (b) => b.toString(16).padStart(2, "0")).join("");
  if (cryptoKeys.has(id)) return cryptoKeys.get(id);
  let key = null;
  try {
    key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch {
    key = null; // not a point WebCrypto takes: nothing verifies under it
  }
  cryptoKeys.set(id, key);
  return key;
}

// Whether `signature` is a valid Ed25519 signature of `message` by `publicKey` as libsodium's
// crypto_sign_open judges it; SignatureCheckUnavailable where WebCrypto has no Ed25519.
export async function verifyEd25519(publicKey, message, signature) {
  if (!(await ed25519Available())) throw new SignatureCheckUnavailable();
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  if (!scalarIsCanonical(signature.subarray(32)) || hasSmallOrder(signature.subarray(0, 32))) return false;
  if (!pointIsCanonical(publicKey) || hasSmallOrder(publicKey)) return false;
  const key = await cryptoKey(publicKey);
  if (!key) return false;
  try {
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch {
    return false;
  }
}

// --- the keyring (checkpoint.signing.Keyring) --------------------------------------------

function base64Bytes(text) {
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The public keys a device trusts, by kid, from KeyEntry objects as the server gives them
// ({kid, public_key (base64), status, not_before, not_after}). A key whose kid is not the
// SHA-256 prefix of its public key is refused, as Keyring.add refuses it.
export async function loadKeyring(entries) {
  const keys = new Map();
  for (const entry of entries) {
    const raw = base64Bytes(entry.public_key);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
    if (raw.length !== 32 || toHex(digest.subarray(0, KID_LENGTH)) !== entry.kid || keys.has(entry.kid)) {
      throw new Error(`keyring: key ${entry.kid} does not match its public key or is repeated`);
    }
    keys.set(entry.kid, { entry, publicKey: raw, revoked: entry.status === "revoked" });
  }
  return keys;
}

function inWindow(entry, issuedAt) {
  return entry.not_before <= issuedAt && (entry.not_after === null || entry.not_after === undefined || issuedAt < entry.not_after);
}

// --- the policy's checks (checkpoint.policy) ---------------------------------------------

function own(object, key) {
  return object && Object.prototype.hasOwnProperty.call(object, key) ? object[key] : undefined;
}

// The checkpoint coded `code` of a policy as the server encodes it (/v1/trust, the bundle).
export function gateOf(policy, code) {
  const gate = own(policy.checkpoints, code);
  if (!gate) throw new Error(`unknown checkpoint ${JSON.stringify(code)}`); // a caller's error
  return gate;
}

function isOpenAt(rule, secondOfDay) {
  if (rule.opens < rule.closes) return rule.opens <= secondOfDay && secondOfDay < rule.closes;
  return secondOfDay >= rule.opens || secondOfDay < rule.closes;
}

function modulo(a, b) {
  return ((a % b) + b) % b;
}

function checkRules(permit, gate, now, policy, revocations) {
  const leeway = policy.leeway;
  if (now + leeway < permit.not_before) throw new Reject("not_yet_valid");
  if (now - leeway >= permit.expires) throw new Reject("expired");
  const season = own(policy.seasons, String(permit.season));
  if (!season) throw new Reject("unknown_season");
  if (!(season.opens <= now + leeway && now - leeway < season.closes)) throw new Reject("season_closed");
  const rule = own(gate.rules, String(permit.category));
  if (!rule) throw new Reject("category_not_admitted");
  const mask = permit.entry_points;
  if (!(mask === 0 || Math.floor(mask / 2 ** gate.entry_point) % 2 === 1)) {
    throw new Reject("entry_point_not_admitted");
  }
  if (!isOpenAt(rule, modulo(now + gate.utc_offset, DAY))) throw new Reject("checkpoint_closed");
  // A set bit is final even when the data is stale; only "not revoked" needs freshness.
  if (revocations.isRevoked(permit.list_id, permit.index)) throw new Reject("revoked");
  if (!revocations.isCurrent(now, policy.revocation_staleness)) throw new Reject("revocation_stale");
}

function summary(permit) {
  const holder = permit.holder;
  return {
    permit_id: `${permit.list_id}.${permit.index}`,
    holder_masked: holder.slice(-4).padStart(holder.length, "*"),
    category: CATEGORIES[permit.category],
    season: permit.season,
    not_before: permit.not_before,
    expires: permit.expires,
    entry_points: permit.entry_points,
  };
}

function decision(outcome, code, en, ar, gate, now, policy, permit) {
  return {
    outcome,
    code,
    message_en: en,
    message_ar: ar,
    checkpoint: gate.code,
    checked_at: now,
    policy_version: policy.version,
    permit: permit ? summary(permit) : null,
    warnings: [],
  };
}

function refused(err, gate, now, policy, permit) {
  if (!(err instanceof Reject)) throw err;
  const [outcome, en, ar] = REASONS[err.code];
  return decision(outcome, err.code, en, ar, gate, now, policy, permit);
}

// The key of the keyring that signed this envelope, its signature checked (Keyring.check_sealed);
// raises Reject keys_not_loaded, unknown_key, key_revoked, bad_signature or
// signature_check_unavailable.
async function signedBy(envelope, keyring) {
  const key = keyring.get(toHex(envelope.kid));
  if (!key) throw new Reject(keyring.size === 0 ? "keys_not_loaded" : "unknown_key");
  if (key.revoked) throw new Reject("key_revoked");
  let good;
  try {
    good = await verifyEd25519(key.publicKey, envelope.signed, envelope.signature);
  } catch (err) {
    if (err instanceof SignatureCheckUnavailable) throw new Reject("signature_check_unavailable");
    throw err;
  }
  if (!good) throw new Reject("bad_signature");
  return key;
}

// The decision for one token at checkpoint `gateCode` at `now` (Unix seconds), as
// checkpoint.verify.Verifier.verify gives it. `keyring` is loadKeyring's; `policy` the
// policy as the server encodes it; `revocations` has isRevoked(listId, index) and
// isCurrent(now, bound). A refused token is a decision; only an unknown checkpoint throws.
export async function verifyToken(token, gateCode, now, trust) {
  const { keyring, policy } = trust;
  const gate = gateOf(policy, gateCode);
  let permit = null;
  try {
    const envelope = splitToken(token);
    const key = await signedBy(envelope, keyring);
    permit = decodePayload(envelope.payload);
    if (!inWindow(key.entry, permit.issued_at)) throw new Reject("outside_signing_window");
  } catch (err) {
    return refused(err, gate, now, policy, permit);
  }
  return decidePermit(permit, gate, now, trust);
}

// The decision for permit facts already authenticated (a token's payload whose signature
// was checked, or a member of a signed manifest): Verifier.decide_permit, the rules after
// the signature at `gate` (gateOf's) and `now`.
export function decidePermit(permit, gate, now, { policy, revocations }) {
  try {
    checkRules(permit, gate, now, policy, revocations);
  } catch (err) {
    return refused(err, gate, now, policy, permit);
  }
  return decision(VALID[0], "valid", VALID[1], VALID[2], gate, now, policy, permit);
}

// --- the dispatch manifest (checkpoint/manifest.py) ----------------------------------------

export const MANIFEST_PREFIX = "CPM1:";
const MANIFEST_DOMAIN = new TextEncoder().encode("checkpoint/dispatch-manifest/v1\0");
const MAX_MANIFEST_CHARS = 3391;
const MAX_MEMBERS_PER_CODE = 60;
const MAX_PARTS = 8;
const MANIFEST_VALID = [
  "VALID",
  "manifest_valid",
  "Manifest authentic: check each passenger's line.",
  "الكشف موثّق: راجع سطر كل راكب.",
];

// Whether scanned text is meant as a manifest (checkpoint.manifest.is_manifest).
export function isManifest(text) {
  return text.startsWith(MANIFEST_PREFIX);
}

const UNIX_TIME = ["int", 0n, 0xffffffffffn];
// [name, kind, min, max or pattern] in field order, as msgspec decodes the array-like
// Structs Profile, Member and Manifest (every field required, none unknown).
const PROFILE_FIELDS = [
  ["category", "enum"],
  ["season", "int", 1n, 0xffffn],
  ["not_before", ...UNIX_TIME],
  ["expires", ...UNIX_TIME],
  ["entry_points", "int", 0n, 0xffffffffn],
];
const MEMBER_FIELDS = [
  ["list_id", "int", 0n, 0xffffn],
  ["index", "int", 0n, 0xffffffffn],
  ["holder_masked", "str", 4, 20, /^\**[0-9A-Z]{4}$/],
  ["profile", "int", 0n, BigInt(MAX_MEMBERS_PER_CODE - 1)],
];
const MANIFEST_FIELDS = [
  ["order", "int", 1n, 0xffffffffn],
  ["revision", "int", 1n, 0xffffn],
  ["part", "int", 1n, BigInt(MAX_PARTS)],
  ["parts", "int", 1n, BigInt(MAX_PARTS)],
  ["list_id", "int", 0n, 0xffffn],
  ["index", "int", 0n, 0xffffffffn],
  ["establishment", "str", 1, 32, /^[0-9A-Za-z-]+$/],
  ["checkpoint", "str", 0, 40, /^[a-z][a-z0-9-]{0,39}$/],
  ["plate", "str", 1, 16, /^[0-9A-Z](?:[0-9A-Z ]*[0-9A-Z])?$/],
  ["not_before", ...UNIX_TIME],
  ["expires", ...UNIX_TIME],
  ["issued_at", ...UNIX_TIME],
  ["first_seat", "int", 1n, BigInt(MAX_PARTS * MAX_MEMBERS_PER_CODE)],
  ["profiles", "list", PROFILE_FIELDS],
  ["members", "list", MEMBER_FIELDS],
];

// One array-like Struct of exactly these fields; a "list" field is an array of such Structs.
// Any fault raises a Reject: read_manifest turns every one into manifest_unreadable.
function readStruct(reader, fields) {
  const size = readValue(reader, "array");
  if (size !== fields.length) throw new Reject("invalid_field", `array of length ${size}`);
  const out = {};
  for (const spec of fields) {
    const [name, kind] = spec;
    if (kind === "list") {
      const count = readValue(reader, "array");
      const items = [];
      for (let i = 0; i < count; i++) items.push(readStruct(reader, spec[2]));
      out[name] = items;
    } else if (kind === "str") {
      const text = readValue(reader, "str");
      const length = codePoints(text);
      if (length < spec[2] || length > spec[3] || !spec[4].test(text)) {
        throw new Reject("invalid_field", `${name}: ${JSON.stringify(text)}`);
      }
      out[name] = text;
    } else {
      out[name] = field(reader, spec);
    }
  }
  return out;
}

function decodeManifest(payload) {
  const reader = new Reader(payload);
  const manifest = readStruct(reader, MANIFEST_FIELDS);
  if (reader.pos !== payload.length) throw new Reject("trailing_bytes");
  return manifest;
}

// Split, authenticate and decode a manifest token (checkpoint.manifest.read_manifest);
// raises Reject with a manifest code, keys_not_loaded or signature_check_unavailable.
export async function readManifest(text, keyring) {
  let envelope;
  try {
    envelope = splitEnvelope(text, MANIFEST_PREFIX, MANIFEST_DOMAIN, MAX_MANIFEST_CHARS);
  } catch (err) {
    if (err instanceof Reject) throw new Reject("manifest_unreadable", err.code);
    throw err;
  }
  let key;
  try {
    key = await signedBy(envelope, keyring);
  } catch (err) {
    if (!(err instanceof Reject)) throw err;
    if (err.code === "keys_not_loaded" || err.code === "signature_check_unavailable") throw err;
    throw new Reject("manifest_not_authentic", err.code);
  }
  let manifest;
  try {
    manifest = decodeManifest(envelope.payload);
  } catch (err) {
    if (err instanceof Reject) throw new Reject("manifest_unreadable", err.message);
    throw err;
  }
  if (!inWindow(key.entry, manifest.issued_at)) throw new Reject("manifest_not_authentic", "outside_signing_window");
  if (manifest.part > manifest.parts || !manifest.members.length) {
    throw new Reject("manifest_unreadable", `part ${manifest.part} of ${manifest.parts}`);
  }
  if (manifest.members.some((m) => m.profile >= manifest.profiles.length)) {
    throw new Reject("manifest_unreadable", "a member names no profile");
  }
  return manifest;
}

// Each member as the permit facts a checkpoint decides on, in seat order (Manifest.permits).
function manifestPermits(manifest) {
  return manifest.members.map((m) => {
    const profile = manifest.profiles[m.profile];
    return {
      list_id: m.list_id,
      index: m.index,
      holder: m.holder_masked,
      category: profile.category,
      season: profile.season,
      not_before: profile.not_before,
      expires: profile.expires,
      issued_at: manifest.issued_at,
      entry_points: profile.entry_points,
    };
  });
}

function manifestSummary(manifest) {
  return {
    order: manifest.order,
    revision: manifest.revision,
    part: manifest.part,
    parts: manifest.parts,
    establishment: manifest.establishment,
    checkpoint: manifest.checkpoint,
    plate: manifest.plate,
    not_before: manifest.not_before,
    expires: manifest.expires,
    first_seat: manifest.first_seat,
    head_count: manifest.members.length,
  };
}

// [outcome, code, English, Arabic] of a reason code.
function reasonOf(code) {
  const [outcome, en, ar] = REASONS[code];
  return [outcome, code, en, ar];
}

function manifestCheck([outcome, code, en, ar], gate, now, policy, manifest = null, members = []) {
  const count = (o) => members.filter((m) => m.decision.outcome === o).length;
  return {
    outcome,
    code,
    message_en: en,
    message_ar: ar,
    checkpoint: gate.code,
    checked_at: now,
    policy_version: policy.version,
    manifest,
    members,
    admitted: count("VALID"),
    refused: count("INVALID"),
    manual: count("INDETERMINATE"),
  };
}

// The manifest's outcome at checkpoint `gateCode` at `now` and every member's decision by
// the permit path's own rules (decidePermit), as checkpoint.manifest.check_manifest gives
// it as JSON; `trust` as verifyToken's. A manifest refused whole lists no one; one on stale
// revocation data is INDETERMINATE revocation_stale and lists everyone.
export async function checkManifest(token, gateCode, now, trust) {
  const { keyring, policy, revocations } = trust;
  const gate = gateOf(policy, gateCode);
  let manifest;
  try {
    manifest = await readManifest(token, keyring);
    if (now + policy.leeway < manifest.not_before) throw new Reject("manifest_not_yet_valid");
    if (now - policy.leeway >= manifest.expires) throw new Reject("manifest_expired");
    if (manifest.checkpoint !== gate.code) throw new Reject("manifest_other_checkpoint");
    if (revocations.isRevoked(manifest.list_id, manifest.index)) throw new Reject("manifest_cancelled");
  } catch (err) {
    if (!(err instanceof Reject)) throw err;
    return manifestCheck(reasonOf(err.code), gate, now, policy);
  }
  const members = manifestPermits(manifest).map((permit, i) => ({
    seat: manifest.first_seat + i,
    decision: decidePermit(permit, gate, now, trust),
  }));
  const current = revocations.isCurrent(now, policy.revocation_staleness);
  const head = current ? MANIFEST_VALID : reasonOf("revocation_stale");
  return manifestCheck(head, gate, now, policy, manifestSummary(manifest), members);
}
