// The scanner page's service worker: the page and its files (script, style, verifier,
// QR reader and its .wasm) from the network when it answers, else from this cache, so a
// reload with no network still opens a page that decides from its offline bundle. The API
// (/v1/...) is never cached here: decisions and the bundle have their own paths.
const CACHE = "checkpoint-scan-v1"; // a new name drops every earlier copy (see activate)
// The vendored QR reader is pinned by version (zxing-wasm.LICENSE): served from the cache
// once held, so a weak link does not fetch its 1 MB again on every load. A new version
// comes with a new CACHE name.
const PINNED = new Set(["/static/zxing-reader.js", "/static/zxing_reader.wasm"]);
const FILES = [
  "/scan",
  "/static/scan.js",
  "/static/scan.css",
  "/static/qr-reader.js",
  "/static/verify.js",
  "/static/offline.js",
  "/static/zxing-reader.js",
  "/static/zxing_reader.wasm",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname !== "/scan" && !url.pathname.startsWith("/static/")) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      if (PINNED.has(url.pathname)) {
        const held = await cache.match(url.pathname);
        if (held) return held;
      }
      try {
        const response = await fetch(event.request);
        if (response.ok) await cache.put(url.pathname, response.clone());
        return response;
      } catch {
        const cached = await cache.match(url.pathname);
        if (cached) return cached;
        throw new Error(`offline, and ${url.pathname} is not cached`);
      }
    })(),
  );
});
