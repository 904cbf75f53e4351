// The scanner page offline: the signed offline bundle (GET /v1/offline/bundle, a compact JWS
// checked against the trust-list key pinned at provisioning) kept in IndexedDB and refreshed
// in the background (a delta with since_seq when it can); decisions from it when the network
// is gone; and the queue of those decisions, synced to POST /v1/scans/sync when it is back.
// The bundle check follows checkpoint/offline.py verify_bundle; a refused bundle is never
// used, so a device holding no trusted bundle answers MANUAL CHECK.

import { checkManifest, loadKeyring, verifyEd25519, verifyToken } from "/static/verify.js";

const DB_NAME = "checkpoint-scanner";
const BUNDLE_TYPE = "checkpoint-bundle+jwt";
const STATUS_LIST_TYPE = "statuslist+jwt";
const LEEWAY = 120; // seconds of device clock skew on iat and exp, as the Python check allows
const SIGNATURE_CHARS = 86;
const MAX_SYNC = 500;
const MAX_TOKEN = 1024; // a permit as POST /v1/scans/sync takes it; longer text is no permit
const MAX_MANIFEST = 3391; // a manifest as it takes it (MAX_MANIFEST_CHARS)

// The device's own reasons for MANUAL CHECK, beside the verifier's.
export const OFFLINE_REASONS = {
  offline_data_missing: [
    "No trusted offline data on this device: check manually.",
    "لا توجد بيانات موثوقة دون اتصال على هذا الجهاز: يلزم التحقق اليدوي.",
  ],
  checkpoint_unknown: [
    "This device has not yet learned its checkpoint online: check manually.",
    "لم يتعرّف هذا الجهاز على نقطة التفتيش بعد عبر الاتصال: يلزم التحقق اليدوي.",
  ],
};

export class BundleRefused extends Error {}

// --- IndexedDB -----------------------------------------------------------------------------

let opened = null;

function database() {
  if (!opened) {
    opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => {
        request.result.createObjectStore("state");
        request.result.createObjectStore("queue", { keyPath: "scan_id" });
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opened;
}

async function transact(store, mode, work) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const request = work(tx.objectStore(store));
    tx.oncomplete = () => resolve(request ? request.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export function storedBundle() {
  return transact("state", "readonly", (s) => s.get("bundle"));
}

function storeBundle(state) {
  return transact("state", "readwrite", (s) => s.put(state, "bundle"));
}

export function forgetBundle() {
  return transact("state", "readwrite", (s) => s.delete("bundle"));
}

export function queued() {
  return transact("queue", "readonly", (s) => s.getAll());
}

// --- the compact JWS (checkpoint/jws.py open_signed) ---------------------------------------

const B64URL = /^[A-Za-z0-9_-]*$/;

function b64url(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Strict unpadded base64url: the alphabet, no padding, the one canonical spelling.
function b64urlDecode(text) {
  if (!B64URL.test(text) || text.length % 4 === 1) throw new BundleRefused("not unpadded base64url");
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (b64url(bytes) !== text) throw new BundleRefused("not the canonical base64url of its bytes");
  return bytes;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function json(bytes) {
  try {
    return JSON.parse(utf8.decode(bytes));
  } catch {
    throw new BundleRefused("not JSON");
  }
}

async function openSigned(token, typ, trust) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3 || parts[2].length !== SIGNATURE_CHARS) throw new BundleRefused("not a compact JWS");
  const header = json(b64urlDecode(parts[0]));
  const names = Object.keys(header || {}).sort().join(",");
  if (names !== "alg,kid,typ") throw new BundleRefused(`header ${names}`);
  if (header.alg !== "EdDSA") throw new BundleRefused(`alg ${header.alg}`);
  if (header.typ !== typ) throw new BundleRefused(`typ ${header.typ}`);
  const key = trust.get(header.kid);
  if (!key) throw new BundleRefused(`trust-list key ${header.kid} is not pinned`);
  if (key.revoked) throw new BundleRefused(`trust-list key ${header.kid} is revoked`);
  const claims = b64urlDecode(parts[1]);
  const signature = b64urlDecode(parts[2]);
  const signed = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
  if (!(await verifyEd25519(key.publicKey, signed, signature))) throw new BundleRefused("bad signature");
  return { entry: key.entry, claims: json(claims) };
}

function checkTimes(entry, iat, exp, now) {
  if (!Number.isInteger(iat) || !Number.isInteger(exp)) throw new BundleRefused("iat and exp");
  const inWindow = entry.not_before <= iat && (entry.not_after == null || iat < entry.not_after);
  if (!inWindow) throw new BundleRefused("issued outside the trust-list key's window");
  if (iat > now + LEEWAY) throw new BundleRefused("issued in the future");
  if (exp + LEEWAY <= now) throw new BundleRefused("expired");
}

const MAX_INFLATED = 2 * 1024 * 1024; // a list inflating past this is refused, not unpacked

async function inflate(lst) {
  const stream = new Blob([b64urlDecode(lst)]).stream().pipeThrough(new DecompressionStream("deflate"));
  const reader = stream.getReader();
  const chunks = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > MAX_INFLATED) {
        reader.cancel();
        throw new BundleRefused("status list inflates past 2 MiB");
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof BundleRefused) throw err;
    throw new BundleRefused("status list does not inflate");
  }
  const bits = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bits.set(chunk, at);
    at += chunk.length;
  }
  return bits;
}

// The trust-list keys a device holds: the one pinned at provisioning (its raw public key in
// base64, as `checkpoint keys list` prints it) until a verified full bundle, signed by it,
// published the set that replaces it (docs/offline.md §1: rotation with overlap).
async function trustKeyring(pinned, published) {
  if (published && published.length) return loadKeyring(published);
  const raw = Uint8Array.from(atob(pinned), (c) => c.charCodeAt(0));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
  const kid = Array.from(digest.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join("");
  return loadKeyring([{ kid, public_key: pinned, status: "active", not_before: 0, not_after: null }]);
}

// A bundle or delta checked as checkpoint.offline.verify_bundle checks it; BundleRefused
// says why not. A full bundle's lists come back as their raw bits.
export async function verifyBundle(token, trust, now) {
  const { entry, claims } = await openSigned(token, BUNDLE_TYPE, trust);
  if (!claims || typeof claims !== "object") throw new BundleRefused("claims");
  const bound = claims.offline_revocation_bound;
  if (!Number.isInteger(claims.seq) || !Number.isInteger(bound) || bound <= 0) throw new BundleRefused("claims");
  checkTimes(entry, claims.iat, claims.exp, now);
  if (claims.kind === "delta") return { bundle: claims, lists: null };
  if (claims.kind !== "full" || !Array.isArray(claims.status_lists)) throw new BundleRefused("kind");
  const lists = {};
  for (const ref of claims.status_lists) {
    const list = await openSigned(ref.token, STATUS_LIST_TYPE, trust);
    const status = list.claims;
    checkTimes(list.entry, status.iat, status.exp, now);
    if (!status.status_list || status.status_list.bits !== 1) throw new BundleRefused("bits");
    const uri = `urn:checkpoint:status-list:${ref.id}`;
    if (status.sub !== ref.uri || ref.uri !== uri || ref.id in lists) throw new BundleRefused(`list ${ref.id}`);
    const bits = await inflate(status.status_list.lst);
    if (bits.length * 8 < ref.capacity) throw new BundleRefused(`list ${ref.id} is short`);
    lists[ref.id] = bits;
  }
  return { bundle: claims, lists };
}

// --- refreshing ----------------------------------------------------------------------------

// Fetch and check the bundle (a delta on top of the one held, when there is one), keep it if
// it passes. Answers "current", "unchanged", "refused" (a bundle came that did not pass: the
// one held, if any, stays) or "unreachable".
export async function refresh({ apiKey, pinnedKey, now, fetchTimeoutMs = 8000 }) {
  if (!pinnedKey) return "refused";
  const held = await storedBundle();
  const trust = await trustKeyring(pinnedKey, held && held.trust_keys);
  const get = async (query, etag) => {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), fetchTimeoutMs);
    try {
      const headers = { Authorization: `Bearer ${apiKey}` };
      if (etag) headers["If-None-Match"] = etag;
      return await fetch(`/v1/offline/bundle${query}`, { headers, cache: "no-store", signal: controller.signal });
    } finally {
      clearTimeout(timer);
    }
  };
  let response;
  try {
    response = await get(held ? `?since_seq=${held.seq}` : "", held && held.etag);
    if (held && response.status !== 200 && response.status !== 304) response = await get("", null);
  } catch {
    return "unreachable";
  }
  if (response.status === 304) return "unchanged";
  if (!response.ok) return "unreachable";
  const text = await response.text();
  try {
    const { bundle, lists } = await verifyBundle(text, trust, now);
    if (bundle.kind === "delta") {
      const sameTrust =
        held && bundle.keyring_version === held.keyring_version && bundle.policy_version === held.policy_version;
      if (!sameTrust || bundle.since_seq > held.seq) {
        return refreshFull(get, trust, now);
      }
      for (const [, listId, index] of bundle.revocations) setBit(held.lists, listId, index);
      await storeBundle({ ...held, seq: Math.max(held.seq, bundle.seq), iat: bundle.iat, exp: bundle.exp,
        bound: bundle.offline_revocation_bound, etag: response.headers.get("etag") });
      return "current";
    }
    await keepFull(bundle, lists, response.headers.get("etag"));
    return "current";
  } catch (err) {
    if (err instanceof BundleRefused) return "refused";
    throw err;
  }
}

async function refreshFull(get, trust, now) {
  const response = await get("", null);
  if (!response.ok) return "unreachable";
  try {
    const { bundle, lists } = await verifyBundle(await response.text(), trust, now);
    if (bundle.kind !== "full") return "refused";
    await keepFull(bundle, lists, response.headers.get("etag"));
    return "current";
  } catch (err) {
    if (err instanceof BundleRefused) return "refused";
    throw err;
  }
}

function keepFull(bundle, lists, etag) {
  return storeBundle({
    seq: bundle.seq,
    iat: bundle.iat,
    exp: bundle.exp,
    bound: bundle.offline_revocation_bound,
    keyring_version: bundle.keyring_version,
    policy_version: bundle.policy_version,
    keys: bundle.keys,
    trust_keys: bundle.trust_keys,
    policy: bundle.policy,
    lists,
    etag,
  });
}

function setBit(lists, listId, index) {
  let bits = lists[listId] || new Uint8Array(0);
  const byte = index >> 3;
  if (byte >= bits.length) {
    const grown = new Uint8Array(byte + 1);
    grown.set(bits);
    bits = grown;
  }
  bits[byte] |= 1 << (index & 7);
  lists[listId] = bits;
}

// --- deciding offline ----------------------------------------------------------------------

function manual(code, checkpoint, now, policyVersion) {
  const [en, ar] = OFFLINE_REASONS[code];
  return {
    outcome: "INDETERMINATE",
    code,
    message_en: en,
    message_ar: ar,
    checkpoint: checkpoint || "",
    checked_at: now,
    policy_version: policyVersion || "",
    permit: null,
    warnings: [],
  };
}

// What the device decides from at `checkpoint`: {held, trust} with the verifier's trust
// (keyring, policy, revocations) from the bundle held, or {held, manual} naming the reason
// it cannot decide (no trusted bundle, a checkpoint not learned online).
async function deviceTrust(checkpoint) {
  let held = null;
  try {
    held = await storedBundle();
  } catch {
    held = null; // no IndexedDB here (a private window): nothing trusted to decide from
  }
  if (!held) return { held, manual: "offline_data_missing" };
  if (!checkpoint || !Object.prototype.hasOwnProperty.call(held.policy.checkpoints, checkpoint)) {
    return { held, manual: "checkpoint_unknown" };
  }
  const keyring = await loadKeyring(held.keys);
  const revocations = {
    isRevoked(listId, index) {
      const bits = held.lists[listId];
      const byte = Math.floor(index / 8);
      return Boolean(bits && byte < bits.length && (bits[byte] >> index % 8) & 1);
    },
    // The offline bound, not the online staleness: the bundle is the device's only source.
    isCurrent: (at) => at - held.iat <= held.bound && at < held.exp + LEEWAY,
  };
  return { held, trust: { keyring, policy: held.policy, revocations } };
}

function offline(answer, held) {
  return { ...answer, offline: true, revocations_as_of: held ? held.iat : null };
}

// The decision for `token` at `checkpoint` from the bundle held, at `now`; `offline` and
// `revocations_as_of` (the bundle's iat) added. Past the bundle's offline bound (or its
// expiry) a permit that would pass is MANUAL CHECK (revocation_stale), never ACCEPT.
export async function decideOffline(token, checkpoint, now) {
  const { held, manual: why, trust } = await deviceTrust(checkpoint);
  const decision = why
    ? manual(why, checkpoint, now, held && held.policy_version)
    : await verifyToken(token, checkpoint, now, trust);
  return offline(decision, held);
}

// A manifest scanned offline: checkManifest (verify.js) from the bundle held, as
// decideOffline decides a permit. Past the offline bound the manifest is MANUAL CHECK
// (revocation_stale) and every member who would pass is too; a revoked one is refused.
export async function checkManifestOffline(token, checkpoint, now) {
  const { held, manual: why, trust } = await deviceTrust(checkpoint);
  if (why) {
    const { permit, warnings, ...check } = manual(why, checkpoint, now, held && held.policy_version);
    return offline({ ...check, manifest: null, members: [], admitted: 0, refused: 0, manual: 0 }, held);
  }
  return offline(await checkManifest(token, checkpoint, now, trust), held);
}

// --- the queue of offline scans ------------------------------------------------------------

export function enqueue(decision, token) {
  if (token.length > MAX_TOKEN || !decision.checkpoint) return Promise.resolve();
  const scan = {
    scan_id: crypto.randomUUID(),
    token,
    checkpoint: decision.checkpoint,
    at: decision.checked_at,
    outcome: decision.outcome,
    code: decision.code,
  };
  return transact("queue", "readwrite", (s) => s.put(scan));
}

// A bus manifest decided offline: one queued scan a passenger, with its seat, as if each
// permit had been scanned alone (the server checks the manifest again and records each
// passenger's entry for anti-passback); a manifest refused whole is one scan without a seat.
export function enqueueManifest(check, token) {
  if (token.length > MAX_MANIFEST || !check.checkpoint) return Promise.resolve();
  const scan = (decision, seat) => ({
    scan_id: crypto.randomUUID(),
    token,
    checkpoint: check.checkpoint,
    at: check.checked_at,
    outcome: decision.outcome,
    code: decision.code,
    ...(seat === undefined ? {} : { seat }),
  });
  const scans = check.members.length
    ? check.members.map((m) => scan(m.decision, m.seat))
    : [scan(check, undefined)];
  return transact("queue", "readwrite", (s) => {
    for (const one of scans) s.put(one);
    return null;
  });
}

async function post(apiKey, deviceId, scans) {
  try {
    return await fetch("/v1/scans/sync", {
      method: "POST",
      headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: deviceId, scans }),
      cache: "no-store",
    });
  } catch {
    return null;
  }
}

function strip(scan) {
  const { refused, ...wire } = scan;
  return wire;
}

// Send the queued scans (idempotent per device and scan id: a retry records nothing twice),
// and drop those the server answered for. A batch the server refuses (422: one scan of
// another checkpoint, or stamped in the future by a wrong clock) is sent again one scan at
// a time, and a scan refused alone is kept on the device marked `refused` with the code,
// not sent again, so it cannot hold the others back. Answers how many were synced.
export async function sync({ apiKey, deviceId }) {
  const scans = (await queued()).filter((s) => !s.refused).slice(0, MAX_SYNC);
  if (!scans.length) return 0;
  let response = await post(apiKey, deviceId, scans.map(strip));
  if (!response) return 0;
  if (response.status === 422 && scans.length > 1) {
    let synced = 0;
    for (const scan of scans) synced += await sync1(apiKey, deviceId, scan);
    return synced;
  }
  return settle(response, scans);
}

async function sync1(apiKey, deviceId, scan) {
  const response = await post(apiKey, deviceId, [strip(scan)]);
  return response ? settle(response, [scan]) : 0;
}

async function settle(response, scans) {
  if (response.status === 422) {
    let code = "refused";
    try {
      code = (await response.json()).code || code;
    } catch {
      // the status says enough
    }
    await transact("queue", "readwrite", (s) => {
      for (const scan of scans) s.put({ ...scan, refused: code });
      return null;
    });
    return 0;
  }
  if (!response.ok) return 0;
  const body = await response.json();
  const done = new Set(body.results.map((r) => r.scan_id));
  await transact("queue", "readwrite", (s) => {
    for (const id of done) s.delete(id);
    return null;
  });
  return done.size;
}
