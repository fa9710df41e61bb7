/// <reference lib="webworker" />
/**
 * Service worker: caches the app shell (HTML, scripts, styles, icons) so the
 * app and the history kept in IndexedDB open offline. It never caches or sees
 * messages or keys: it only answers GET requests for the shell's own URLs.
 */
declare const __SHELL__: string[];
declare const __VERSION__: string;
const sw = self as unknown as ServiceWorkerGlobalScope;
const CACHE = `gchat-shell-${__VERSION__}`;

sw.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(__SHELL__)).then(() => sw.skipWaiting()));
});

sw.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("gchat-shell-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => sw.clients.claim()),
  );
});

sw.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== sw.location.origin || !__SHELL__.includes(url.pathname)) return;
  // Network first for the page (a deploy is seen at once), cache first for hashed assets.
  if (url.pathname === "/") {
    event.respondWith(fetch(event.request).catch(async () => (await caches.match("/")) ?? Response.error()));
  } else {
    event.respondWith(caches.match(event.request).then((hit) => hit ?? fetch(event.request)));
  }
});
