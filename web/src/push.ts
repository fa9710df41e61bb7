/**
 * Web Push opt-in, the browser side (docs/WEB.md "Notifications", PROTOCOL.md
 * "Push notifications"). Nothing happens until the official turns it on:
 * then the browser asks for the notification permission, the service
 * worker's PushManager subscribes with the node's VAPID key, and the
 * subscription (endpoint and keys, which the browser keeps) is registered
 * with the node. What a push shows is decided in sw.ts: never content.
 */
import type { Device } from "./client";

export type PushState = "unsupported" | "denied" | "off" | "on";

export function pushSupported(): boolean {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

const manager = async (): Promise<PushManager> => (await navigator.serviceWorker.ready).pushManager;

const sameKey = (a: ArrayBuffer | null, b: Uint8Array): boolean => {
  if (a === null || a.byteLength !== b.length) return false;
  const x = new Uint8Array(a);
  return x.every((v, i) => v === b[i]);
};

/** On only when both the browser holds a subscription and the node has this device's. */
export async function pushState(device: Device): Promise<PushState> {
  if (!pushSupported()) return "unsupported";
  if (Notification.permission === "denied") return "denied";
  if (Notification.permission !== "granted" || (await (await manager()).getSubscription()) === null) return "off";
  return (await device.pushConfig()).registered ? "on" : "off";
}

export async function enablePush(device: Device): Promise<PushState> {
  if (!pushSupported()) return "unsupported";
  const permission = await Notification.requestPermission();
  if (permission !== "granted") return permission === "denied" ? "denied" : "off";
  const { vapidKey } = await device.pushConfig();
  const push = await manager();
  let subscription = await push.getSubscription();
  if (subscription !== null && !sameKey(subscription.options.applicationServerKey, vapidKey)) {
    await subscription.unsubscribe(); // made for another VAPID key: the node could not push to it
    subscription = null;
  }
  subscription ??= await push.subscribe({ userVisibleOnly: true, applicationServerKey: new Uint8Array(vapidKey) });
  const p256dh = subscription.getKey("p256dh");
  const auth = subscription.getKey("auth");
  if (p256dh === null || auth === null) throw new Error("the browser gave a subscription without keys");
  await device.registerPush(subscription.endpoint, new Uint8Array(p256dh), new Uint8Array(auth));
  return "on";
}

/**
 * The node forgets the subscription, then the browser drops it. Each step is
 * tried even when the other fails (offline at sign-out: the push service then
 * answers 410 to the node's next push, and the node deletes it).
 */
export async function disablePush(device: Device): Promise<void> {
  if (!pushSupported()) return;
  await device.unregisterPush().catch(() => undefined);
  const subscription = await (await manager()).getSubscription().catch(() => null);
  await subscription?.unsubscribe().catch(() => false);
}

/** A tap on a notification while the app is open: connect now (sw.ts posts this). */
export function wakeOnNotification(device: Device): () => void {
  if (!("serviceWorker" in navigator)) return () => undefined;
  const onMessage = (e: MessageEvent): void => {
    if ((e.data as { type?: unknown } | null)?.type === "gchat-wake") device.wake();
  };
  navigator.serviceWorker.addEventListener("message", onMessage);
  return () => navigator.serviceWorker.removeEventListener("message", onMessage);
}
