/// <reference lib="webworker" />
/**
 * Service worker: caches the app shell (HTML, scripts, styles, icons) so the
 * app and the history kept in IndexedDB open offline. It never caches or sees
 * messages or keys: it only answers GET requests for the shell's own URLs.
 *
 * Web Push (docs/WEB.md "Notifications"): a push shows one fixed notification,
 * "G-Chat: ข้อความใหม่" / "New messages". The payload is never read (the node
 * sends only {"type":"new_messages"}; anything else in it is ignored), so a
 * notification can show no sender, conversation or text. A tap opens or
 * focuses the app, which connects and drains its inbox.
 */
import { translate } from "./i18n";

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

const NOTIFICATION_TAG = "gchat-new-messages"; // one notification at a time: a newer push replaces it

sw.addEventListener("push", (event) => {
  event.waitUntil(sw.registration.showNotification(`G-Chat: ${translate("th", "pushNotification")}`, {
    body: translate("en", "pushNotification"),
    tag: NOTIFICATION_TAG,
    lang: "th",
  }));
});

sw.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const open = (await sw.clients.matchAll({ type: "window", includeUncontrolled: true }))
      .find((c) => new URL(c.url).origin === sw.location.origin);
    if (open === undefined) {
      await sw.clients.openWindow("/"); // the app connects on start
      return;
    }
    open.postMessage({ type: "gchat-wake" }); // connect now if waiting to retry
    await open.focus();
  })());
});
