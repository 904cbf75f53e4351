// The scanner page: the QR is read on the device (qr-reader.js) and only its token goes to
// POST /v1/verify, then the verdict fills the screen. Where no reader can run, camera frames
// go to POST /v1/scan as before. ES modules, no build step, nothing from outside this server.
import {
  checkManifestOffline,
  decideOffline,
  enqueue,
  enqueueManifest,
  forgetBundle,
  refresh,
  storedBundle,
  sync,
} from "/static/offline.js";
import { createReader } from "/static/qr-reader.js";
import { isManifest } from "/static/verify.js";

(() => {
  const KEY_STORE = "checkpoint.scannerKey";
  const TRUST_STORE = "checkpoint.trustKey"; // the trust-list key pinned at provisioning
  const CHECKPOINT_STORE = "checkpoint.checkpoint"; // learned from the server's decisions
  const DEVICE_STORE = "checkpoint.deviceId";
  const ONLINE_BUDGET_MS = 2500; // a verification slower than this is decided on the device
  const MANIFEST_BUDGET_MS = 6000; // a bus: up to 60 passengers, each with its anti-passback claim
  const REFRESH_MS = 60000; // the offline bundle, refreshed in the background
  const FRAME_INTERVAL_MS = 300; // a few frames a second: enough to feel instant, light on data
  const READ_INTERVAL_MS = 120; // reading on the device costs no data: look again soon
  const RETRY_MS = 2000; // after a lost network or a server error, keep trying but calmly
  const REQUEST_TIMEOUT_MS = 8000; // a hung request must surface as "no connection", not a freeze
  const MAX_FRAME_SIDE = 960; // QR reading needs no more; smaller frames travel faster

  const VERDICTS = {
    VALID: { mark: "✓", en: "ACCEPT", ar: "دخول مسموح" },
    INVALID: { mark: "✕", en: "REJECT", ar: "مرفوض" },
    INDETERMINATE: { mark: "?", en: "MANUAL CHECK", ar: "تحقق يدوي" },
  };
  // A bus manifest's own verdict: whether the list itself stands, not any one passenger.
  const MANIFEST_VERDICTS = {
    VALID: { mark: "✓", en: "MANIFEST VALID", ar: "الكشف صالح" },
    INVALID: { mark: "✕", en: "MANIFEST REFUSED", ar: "الكشف مرفوض" },
    INDETERMINATE: { mark: "?", en: "MANUAL CHECK", ar: "تحقق يدوي" },
  };
  const STATUS = {
    scanning: ["Point the camera at the permit's QR code.", "وجّه الكاميرا إلى رمز QR في التصريح."],
    offline: [
      "No connection to the server. Still trying; no decision can be made until it is back.",
      "لا يوجد اتصال بالخادم. تتم إعادة المحاولة؛ لا يمكن إصدار قرار حتى يعود الاتصال.",
    ],
    "server-error": [
      "The server is not answering properly. Still trying.",
      "الخادم لا يستجيب كما يجب. تتم إعادة المحاولة.",
    ],
    "rate-limited": [
      "Too many scans at once for this key. Slowing down.",
      "عدد كبير من عمليات المسح لهذا المفتاح. يتم الإبطاء.",
    ],
    "frame-error": ["The picture could not be read. Trying again.", "تعذرت قراءة الصورة. تتم إعادة المحاولة."],
  };
  const CAMERA_ERRORS = {
    NotAllowedError: [
      "Camera permission was refused. Allow the camera in the browser settings, or type the token.",
      "تم رفض إذن الكاميرا. اسمح بالكاميرا من إعدادات المتصفح، أو أدخل الرمز يدويًا.",
    ],
    NotFoundError: ["No camera was found on this device. Type the token instead.", "لا توجد كاميرا في هذا الجهاز. أدخل الرمز يدويًا."],
    NotReadableError: [
      "The camera is busy in another app. Close it, or type the token.",
      "الكاميرا مستخدمة في تطبيق آخر. أغلقه، أو أدخل الرمز يدويًا.",
    ],
    insecure: [
      "This browser allows the camera only over HTTPS. Type the token instead.",
      "يسمح هذا المتصفح بالكاميرا عبر HTTPS فقط. أدخل الرمز يدويًا.",
    ],
  };
  CAMERA_ERRORS.OverconstrainedError = CAMERA_ERRORS.NotFoundError;

  const $ = (id) => document.getElementById(id);
  const labels = readLabels();
  const dates = dateFormats(labels.timezone || "Asia/Riyadh");
  const canvas = document.createElement("canvas");
  const video = $("preview");

  let sessionKey = storedKey();
  let stream = null;
  let scanning = false;
  let timer = 0;
  let audio = null;
  let reader; // undefined: not created yet; null: none runs here (frames go to /v1/scan)

  function readLabels() {
    try {
      return JSON.parse($("labels").textContent);
    } catch {
      return { categories: {}, seasons: {}, checkpoints: {} };
    }
  }

  function dateFormats(timeZone) {
    const options = {
      timeZone,
      day: "numeric",
      year: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    };
    try {
      return {
        clock: new Intl.DateTimeFormat("en-GB", { timeZone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" }),
        en: new Intl.DateTimeFormat("en-GB", { ...options, month: "short" }),
        // The Umm al-Qura date, as Saudi documents give it, short enough for one line on a
        // phone; Latin digits like the line above. The hour is on the English line.
        ar: new Intl.DateTimeFormat("ar-SA-u-ca-islamic-umalqura-nu-latn", {
          timeZone,
          day: "numeric",
          month: "numeric",
          year: "numeric",
        }),
      };
    } catch {
      const utc = { ...options, timeZone: "UTC", timeZoneName: "short", month: "short" };
      return {
        clock: new Intl.DateTimeFormat("en-GB", utc),
        en: new Intl.DateTimeFormat("en-GB", utc),
        ar: new Intl.DateTimeFormat("ar", utc),
      };
    }
  }

  // --- key -----------------------------------------------------------------------------

  function storedKey() {
    try {
      return localStorage.getItem(KEY_STORE) || "";
    } catch {
      return "";
    }
  }

  function storeKey(key) {
    try {
      localStorage.setItem(KEY_STORE, key);
    } catch {
      // Private mode without storage: the key lives for this page only.
    }
    sessionKey = key;
  }

  function showKeyError(code, en, ar) {
    const box = $("key-error");
    box.dataset.code = code;
    box.replaceChildren(line(en), line(ar, "ar"));
    box.hidden = false;
  }

  // --- screens and text ----------------------------------------------------------------

  function show(screen) {
    document.body.dataset.screen = screen;
  }

  function line(text, lang) {
    const span = document.createElement("span");
    span.textContent = text;
    span.style.display = "block";
    if (lang === "ar") {
      span.lang = "ar";
      span.dir = "rtl";
    }
    return span;
  }

  function setStatus(state, en, ar) {
    const status = $("status");
    if (status.dataset.state === state && !en) return;
    const [textEn, textAr] = en ? [en, ar] : STATUS[state];
    status.dataset.state = state;
    status.replaceChildren(line(textEn), line(textAr, "ar"));
  }

  // --- sound and vibration -------------------------------------------------------------

  function unlockAudio() {
    // Browsers start audio only from a user gesture; the first tap anywhere does it.
    if (audio || !window.AudioContext) return;
    try {
      audio = new AudioContext();
    } catch {
      audio = null;
    }
  }

  function tone(start, frequency, duration, type) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = type;
    osc.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.4, start + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + duration);
    osc.connect(gain).connect(audio.destination);
    osc.start(start);
    osc.stop(start + duration + 0.02);
  }

  function signal(outcome) {
    // Distinct by ear and by hand, for an officer looking at the traveller, not the phone.
    const patterns = {
      VALID: { tones: [[0, 880, 0.12, "sine"], [0.14, 1320, 0.18, "sine"]], buzz: [80] },
      INVALID: { tones: [[0, 196, 0.6, "square"]], buzz: [300, 100, 300] },
      INDETERMINATE: {
        tones: [[0, 520, 0.12, "triangle"], [0.2, 520, 0.12, "triangle"], [0.4, 520, 0.12, "triangle"]],
        buzz: [150, 100, 150, 100, 150],
      },
    };
    const pattern = patterns[outcome] || patterns.INDETERMINATE;
    if (audio) {
      try {
        if (audio.state === "suspended") audio.resume();
        const now = audio.currentTime;
        for (const [at, frequency, duration, type] of pattern.tones) tone(now + at, frequency, duration, type);
      } catch {
        // No sound is no reason to hide the verdict.
      }
    }
    if (typeof navigator.vibrate === "function") navigator.vibrate(pattern.buzz);
  }

  // --- requests ------------------------------------------------------------------------

  async function call(path, body, contentType, budget = REQUEST_TIMEOUT_MS) {
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(), budget);
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: { Authorization: `Bearer ${sessionKey}`, "Content-Type": contentType },
        body,
        signal: controller.signal,
        cache: "no-store",
      });
    } catch {
      return { kind: "network" };
    } finally {
      clearTimeout(timeout);
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (response.ok && data) return { kind: "ok", data };
    const code = (data && data.code) || `http_${response.status}`;
    const title = (data && data.title) || response.statusText;
    if (response.status === 401 || response.status === 403) {
      return { kind: "auth", status: response.status, code, title };
    }
    if (response.status === 429) return { kind: "rate-limited", code };
    if (response.status >= 500 || !data) return { kind: "server-error", code };
    return { kind: "refused", status: response.status, code, title };
  }

  function keyRejected(result) {
    stopScanning();
    const why =
      result.status === 401
        ? ["The server refused this scanner key: it is unknown or disabled.", "رفض الخادم مفتاح الماسح هذا: غير معروف أو معطّل."]
        : ["This key may not scan here: it is not a checkpoint scanner key.", "لا يسمح هذا المفتاح بالمسح: ليس مفتاح ماسح لمركز ضبط."];
    showKeyError(result.code, `${why[0]} (${result.status} ${result.code})`, why[1]);
    $("key-input").value = "";
    show("setup");
  }

  // --- camera and scanning -------------------------------------------------------------

  async function startCamera() {
    if (stream) return true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setStatus("camera-error", ...CAMERA_ERRORS.insecure);
      return false;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
      });
    } catch (err) {
      const name = (err && err.name) || "Error";
      const [en, ar] = CAMERA_ERRORS[name] || [
        `The camera could not be opened (${name}). Type the token instead.`,
        "تعذر تشغيل الكاميرا. أدخل الرمز يدويًا.",
      ];
      setStatus("camera-error", en, ar);
      return false;
    }
    for (const track of stream.getVideoTracks()) {
      // A camera taken away (another app, a cable, a permission revoked) must not leave a
      // frozen last picture on screen that looks like a live preview.
      track.addEventListener("ended", () => {
        stream = null;
        stopScanning();
        setStatus(
          "camera-error",
          "The camera stopped. Tap this message to try again, or type the token.",
          "توقفت الكاميرا. اضغط على هذه الرسالة لإعادة المحاولة، أو أدخل الرمز يدويًا.",
        );
      });
    }
    video.srcObject = stream;
    try {
      await video.play();
    } catch {
      // Autoplay of a muted inline video is allowed; if not, the next frame grab retries.
    }
    return true;
  }

  function grabFrame() {
    const width = video.videoWidth;
    const height = video.videoHeight;
    if (!width || !height) return Promise.resolve(null);
    const scale = Math.min(1, MAX_FRAME_SIDE / Math.max(width, height));
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  }

  function schedule(delay) {
    clearTimeout(timer);
    if (scanning) timer = setTimeout(scanOnce, delay);
  }

  async function scanOnce() {
    if (!scanning) return;
    if (reader === undefined) {
      reader = await createReader();
      document.body.dataset.reader = reader ? reader.name : "server";
    }
    if (reader) {
      await readOnce();
      return;
    }
    const frame = await grabFrame();
    if (!scanning) return;
    if (!frame) {
      schedule(FRAME_INTERVAL_MS);
      return;
    }
    const result = await call("/v1/scan", frame, "image/jpeg");
    if (!scanning) return; // the officer moved on while the frame was in flight
    if (result.kind !== "ok") {
      notAnswered(result);
    } else if (result.data.found && result.data.decision) {
      showResult(result.data.decision);
    } else {
      setStatus("scanning");
      schedule(FRAME_INTERVAL_MS);
    }
  }

  // What a call that brought no decision leaves on screen, and when to try again: the same
  // for a frame sent to /v1/scan and a token sent to /v1/verify.
  function notAnswered(result) {
    switch (result.kind) {
      case "auth":
        keyRejected(result);
        return;
      case "network":
        setStatus("offline");
        schedule(RETRY_MS);
        return;
      case "rate-limited":
        setStatus("rate-limited");
        schedule(RETRY_MS);
        return;
      case "server-error":
        setStatus("server-error");
        schedule(RETRY_MS);
        return;
      default:
        // A frame the server could not read, or a QR that is no permit and too big for
        // the route (413): keep looking.
        setStatus("frame-error");
        schedule(FRAME_INTERVAL_MS);
    }
  }

  async function readOnce() {
    let token = null;
    try {
      token = await reader.read(video);
    } catch {
      token = null; // a frame the reader choked on: the next one will do
    }
    if (!scanning) return;
    if (!token) {
      setStatus("scanning");
      schedule(READ_INTERVAL_MS);
      return;
    }
    const result = await decideToken(token);
    if (!scanning) return; // the officer moved on while the token was in flight
    if (result.kind === "ok") {
      showResult(result.data);
    } else {
      notAnswered(result);
    }
  }

  async function startScanning() {
    show("scanner");
    if (!(await startCamera())) return; // the camera's status stays up; typing still works
    if (document.body.dataset.screen !== "scanner") return;
    scanning = true;
    setStatus("scanning");
    schedule(0);
  }

  function stopScanning() {
    scanning = false;
    clearTimeout(timer);
  }

  // --- the verdict ---------------------------------------------------------------------

  function formatted(format, seconds) {
    try {
      return format.format(new Date(seconds * 1000));
    } catch {
      return new Date(seconds * 1000).toISOString();
    }
  }

  function showResult(decision) {
    stopScanning();
    // A manifest check (POST /v1/verify/manifest, or verify.js offline) lists its members.
    const isCheck = Array.isArray(decision.members);
    const outcome = VERDICTS[decision.outcome] ? decision.outcome : "INDETERMINATE";
    const verdict = (isCheck ? MANIFEST_VERDICTS : VERDICTS)[outcome];
    const result = $("result");
    result.dataset.kind = isCheck ? "manifest" : "permit";
    result.dataset.outcome = outcome;
    result.dataset.code = decision.code;
    result.dataset.offline = decision.offline ? "true" : "false";
    const note = $("offline-note");
    note.hidden = !decision.offline;
    if (decision.offline) {
      const asOf = decision.revocations_as_of;
      const time = asOf === null ? "—" : formatted(dates.clock, asOf);
      note.replaceChildren(
        line(`Offline decision, on this device · revocations as of ${time}`),
        line(`قرار دون اتصال، على هذا الجهاز · الإلغاءات حتى ${time}`, "ar"),
      );
    }
    $("verdict-mark").textContent = verdict.mark;
    $("verdict-word").textContent = verdict.en;
    $("verdict-ar").textContent = verdict.ar;
    $("reason-ar").textContent = decision.message_ar;
    $("reason-en").textContent = decision.message_en;

    const permit = isCheck ? null : decision.permit;
    $("permit").hidden = !permit;
    $("manifest").hidden = !isCheck;
    if (isCheck) showManifest(decision);
    if (permit) {
      const [categoryEn, categoryAr] = labels.categories[permit.category] || [permit.category, ""];
      $("holder").textContent = permit.holder_masked;
      $("category-en").textContent = categoryEn;
      $("category-ar").textContent = categoryAr;
      $("valid-from").textContent = `from ${formatted(dates.en, permit.not_before)}`;
      $("valid-until").textContent = `until ${formatted(dates.en, permit.expires)}`;
      $("valid-ar").textContent =
        `${formatted(dates.ar, permit.not_before)} – ${formatted(dates.ar, permit.expires)}`;
    }
    const checkpoint = labels.checkpoints[decision.checkpoint];
    const where = checkpoint ? checkpoint[0] : decision.checkpoint || "this device";
    const permitId = permit ? ` · permit ${permit.permit_id}` : "";
    $("meta").textContent =
      `${where} · ${formatted(dates.en, decision.checked_at)}${permitId} · policy ${decision.policy_version}`;

    show("result");
    signal(isCheck ? busSignal(decision) : outcome);
    $("next").focus();
  }

  // A bus: the officer hears a refusal on board even when the list itself is valid.
  function busSignal(check) {
    if (check.outcome !== "VALID") return check.outcome;
    if (check.refused) return "INVALID";
    return check.manual ? "INDETERMINATE" : "VALID";
  }

  function span(text, className, lang) {
    const element = line(text, lang);
    if (className) element.className = className;
    return element;
  }

  // The bus of a manifest check: plate, order, part; the admitted count against the head
  // count the officer should see; a red line per refused passenger, amber per manual check.
  function showManifest(check) {
    const bus = check.manifest;
    const manifest = $("manifest");
    manifest.dataset.admitted = String(check.admitted);
    manifest.dataset.refused = String(check.refused);
    manifest.dataset.manual = String(check.manual);
    for (const id of ["bus", "bus-part-ar", "manifest-count", "head-count"]) $(id).hidden = !bus;
    if (bus) {
      $("bus-plate").textContent = `Plate ${bus.plate}`;
      $("bus-order").textContent = `· order ${bus.order}`;
      $("bus-part").textContent = `· part ${bus.part} of ${bus.parts}`;
      $("bus-part-ar").textContent =
        `اللوحة ${bus.plate} · أمر التفويج ${bus.order} · الجزء ${bus.part} من ${bus.parts}`;
      $("count-en").textContent = `Admitted ${check.admitted} of ${bus.head_count}`;
      $("count-ar").textContent = `مسموح ${check.admitted} من ${bus.head_count}`;
      $("head-en").textContent = `Count on the bus: ${bus.head_count} passengers`;
      $("head-ar").textContent = `عدد الركاب في الحافلة: ${bus.head_count}`;
      manifest.dataset.headCount = String(bus.head_count);
    }
    // Refused passengers first, then those to check by hand, each in seat order: on stale
    // data every passenger is amber, and the red ones must not be lost among them.
    const refused = check.members.filter((m) => m.decision.outcome === "INVALID");
    const manual = check.members.filter((m) => m.decision.outcome !== "INVALID" && m.decision.outcome !== "VALID");
    const lines = refused
      .concat(manual)
      .map(({ seat, decision }) => {
        const item = document.createElement("li");
        item.className = "seat-line";
        item.dataset.seat = String(seat);
        item.dataset.outcome = decision.outcome === "INVALID" ? "INVALID" : "INDETERMINATE";
        item.dataset.code = decision.code;
        const member = decision.permit;
        const [categoryEn, categoryAr] = member
          ? labels.categories[member.category] || [member.category, ""]
          : ["", ""];
        const who = span(`Seat ${seat} · `, "who");
        if (member) {
          const holder = document.createElement("span");
          holder.className = "seat-holder";
          holder.style.display = "inline";
          holder.textContent = member.holder_masked;
          who.append(holder, ` · ${categoryEn}`);
        }
        item.append(who);
        if (categoryAr) item.append(span(`المقعد ${seat} · ${categoryAr}`, "", "ar"));
        item.append(span(decision.message_ar, "", "ar"), span(decision.message_en));
        return item;
      });
    $("seat-lines").replaceChildren(...lines);
  }

  // --- deciding: online first, on the device when the network is gone or slow ------------

  function stored(name) {
    try {
      return localStorage.getItem(name) || "";
    } catch {
      return "";
    }
  }

  function remember(name, value) {
    try {
      localStorage.setItem(name, value);
    } catch {
      // Private mode without storage: kept for this page only, below.
    }
  }

  function nowSeconds() {
    return Math.floor(Date.now() / 1000);
  }

  function deviceId() {
    let id = stored(DEVICE_STORE);
    if (!id) {
      id = `page-${crypto.randomUUID()}`;
      remember(DEVICE_STORE, id);
    }
    return id;
  }

  // The server's answer, or when it cannot be had within the budget (no network, a 5xx),
  // the device's own from the signed bundle, queued for the audit log.
  async function decideToken(token) {
    if (isManifest(token)) return decideManifest(token);
    const result = await call("/v1/verify", JSON.stringify({ token }), "application/json", ONLINE_BUDGET_MS);
    if (result.kind === "ok") {
      if (result.data.checkpoint) remember(CHECKPOINT_STORE, result.data.checkpoint);
      syncQueue();
      return result;
    }
    if (result.kind !== "network" && result.kind !== "server-error") return result;
    const decision = await decideOffline(token, stored(CHECKPOINT_STORE), nowSeconds());
    try {
      await enqueue(decision, token);
    } catch {
      // No IndexedDB (private mode): the decision is still shown.
    }
    return { kind: "ok", data: decision };
  }

  // A bus manifest, as a permit is decided: the server's check, else the device's from the
  // bundle (verify.js checkManifest). Offline each passenger is queued as one scan with its
  // seat (enqueueManifest), synced and counted as a scan of that permit alone.
  async function decideManifest(token) {
    const body = JSON.stringify({ token });
    const result = await call("/v1/verify/manifest", body, "application/json", MANIFEST_BUDGET_MS);
    if (result.kind === "ok") {
      if (result.data.checkpoint) remember(CHECKPOINT_STORE, result.data.checkpoint);
      syncQueue();
      return result;
    }
    if (result.kind !== "network" && result.kind !== "server-error") return result;
    const check = await checkManifestOffline(token, stored(CHECKPOINT_STORE), nowSeconds());
    try {
      await enqueueManifest(check, token);
    } catch {
      // No IndexedDB (private mode): the check is still shown.
    }
    return { kind: "ok", data: check };
  }

  let syncing = false;

  async function syncQueue() {
    if (syncing || !sessionKey) return;
    syncing = true;
    try {
      while ((await sync({ apiKey: sessionKey, deviceId: deviceId() })) > 0) {
        // up to 500 a call: go on until the queue is empty
      }
    } catch {
      // IndexedDB or the network failed: the next round tries again
    } finally {
      syncing = false;
    }
  }

  async function refreshBundle() {
    if (!sessionKey) return;
    let state;
    try {
      state = await refresh({ apiKey: sessionKey, pinnedKey: stored(TRUST_STORE), now: nowSeconds() });
    } catch {
      state = "unreachable";
    }
    if (state === "current" || state === "unchanged") document.body.dataset.bundle = "current";
    else if (state === "refused") document.body.dataset.bundle = "refused";
    else if (!document.body.dataset.bundle) {
      document.body.dataset.bundle = (await storedBundle().catch(() => null)) ? "current" : "none";
    }
  }

  let background = 0;

  function startBackground() {
    if (background) return;
    const round = () => {
      syncQueue();
      refreshBundle();
    };
    round();
    background = setInterval(round, REFRESH_MS);
    window.addEventListener("online", round);
  }

  // --- manual entry --------------------------------------------------------------------

  function showManualError(code, en, ar) {
    const box = $("manual-error");
    box.dataset.code = code;
    box.replaceChildren(line(en), line(ar, "ar"));
    box.hidden = false;
  }

  async function submitToken(event) {
    event.preventDefault();
    // Spaces belong to the token alphabet (base45): drop only line breaks from pasting.
    // Lower case never does, so a token typed in lower case is still read.
    const token = $("token-input").value.replace(/[\r\n]+/g, "").toUpperCase();
    if (!token) return;
    $("manual-error").hidden = true;
    const result = await decideToken(token);
    switch (result.kind) {
      case "ok":
        $("token-input").value = "";
        showResult(result.data);
        return;
      case "auth":
        keyRejected(result);
        return;
      case "network":
        showManualError("offline", STATUS.offline[0], STATUS.offline[1]);
        return;
      case "refused":
        showManualError(
          result.code,
          `That is not a permit token (${result.status} ${result.code}).`,
          "هذا ليس رمز تصريح.",
        );
        return;
      default:
        showManualError(result.code, STATUS[result.kind][0], STATUS[result.kind][1]);
    }
  }

  // --- wiring --------------------------------------------------------------------------

  document.addEventListener("pointerdown", unlockAudio, { passive: true });
  document.addEventListener("keydown", unlockAudio);

  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    storeKey(key);
    $("key-error").hidden = true;
    unlockAudio();
    // `checkpoint keys list` prints "KID: BASE64": the key is the last word.
    const trust = $("trust-input").value.trim().split(/\s+/).pop();
    if (trust && trust !== stored(TRUST_STORE)) {
      remember(TRUST_STORE, trust);
      // A bundle checked against another key is not kept.
      await forgetBundle().catch(() => {});
    }
    startBackground();
    startScanning();
  });

  $("key-change").addEventListener("click", () => {
    stopScanning();
    $("key-input").value = "";
    show("setup");
  });

  $("manual-open").addEventListener("click", () => {
    stopScanning();
    $("manual-error").hidden = true;
    show("manual");
    $("token-input").focus();
  });
  $("manual-cancel").addEventListener("click", startScanning);
  $("manual-form").addEventListener("submit", submitToken);
  $("next").addEventListener("click", startScanning);
  $("status").addEventListener("click", () => {
    if ($("status").dataset.state === "camera-error") startScanning();
  });

  document.addEventListener("visibilitychange", () => {
    // No frames from a pocket; pick up again when the screen is back.
    if (document.hidden) stopScanning();
    else if (document.body.dataset.screen === "scanner" && !scanning) startScanning();
  });

  if ("serviceWorker" in navigator) {
    // The page and its files, cached so that a reload with no network still opens it.
    navigator.serviceWorker.register("/scan-sw.js", { scope: "/scan" }).catch(() => {});
  }

  if (sessionKey) {
    startBackground();
    startScanning();
  } else show("setup");
})();
