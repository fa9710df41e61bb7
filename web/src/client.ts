/**
 * The device: enrolment, connection, end-to-end encryption and the client
 * trust rules (PROTOCOL.md Part II §E6a, §E7a), the browser twin of
 * gchat/client/sdk.py.
 *
 * Trust comes only from what this device verified: a device is bound to an
 * official by a directory certificate checked against the key pinned at
 * enrolment, never by a frame's label; a prekey message is accepted once
 * (replay cache); a sender key only moves forward; every new or removed
 * device of a peer is noticed, and a verified peer whose devices changed
 * blocks sending until the user accepts or re-verifies.
 *
 * Per delivery: decrypt, save the state, then ack (nothing can be lost); a
 * message that fails after decryption is recorded as unreadable and acked
 * so one bad message never stops the queue. Acks are coalesced (`Acks`):
 * one frame for the deliveries handled in a burst.
 */
import { decode } from "@msgpack/msgpack";
import { b64, equal, readU32, unb64, utf8, fromUtf8 } from "./crypto/bytes";
import { decodeFileBody, encodeFileBody, isFileBody, type FileRef } from "./crypto/attachment";
import { decodeContent, encodeContent, membersDigest, type Content, type Member } from "./crypto/content";
import { CryptoError, InvalidMessage, ReplayedMessage } from "./crypto/errors";
import { authMessage, certificateFor, signedPrekeyMessage, verifyCertificate, verifyMembership } from "./crypto/formats";
import { ed25519FromSeed, ed25519Generate, randomBytes, sha256, sign, x25519Pair, type Ed25519Pair } from "./crypto/primitives";
import { formatSafetyNumber, safetyNumber } from "./crypto/safety";
import {
  acceptDistribution, distributionMessage, fromDistribution, generateSenderKey, groupDecrypt, groupEncrypt, rotateSenderKey, type SenderKeyState,
} from "./crypto/senderkeys";
import {
  accept, expireArchivedSessions, initiate, parsePrekeyMessage, prekeyMessageDigest, sessionDecrypt, sessionEncrypt, type SessionState,
} from "./crypto/session";
import { Acks } from "./net/acks";
import { nodeUrl, ServerError, Wire, type Frame } from "./net/wire";
import { Shelf, viewableType } from "./files/shelf";
import { Cancelled, decryptKept, download, upload, type Net, type Progress } from "./files/transfer";
import type { Vault } from "./store/vault";

const PREKEY_BATCH = 50;
const MAX_SESSIONS = 5;
const SEEN_CACHE = 5000;
/** Rotate our sender key after this many group messages (and on every departure). */
const SENDER_KEY_MAX_MESSAGES = 1000;
const SENDER_KEY_MAX_AGE_MS = 7 * 24 * 3600 * 1000;
const SIGNED_PREKEY_MAX_AGE_MS = 7 * 24 * 3600 * 1000;

interface Prekey { id: number; priv: string; pub: string; at?: number }
export interface ConvView { id: string; seq: number; kind: string; title: string; announcementOnly: boolean; members: Member[] }
interface Binding { official: string; identityKey: string; certificate: string }
export interface PeerInfo { keys: Record<string, string>; verified: string[] | null; changed: boolean }

interface DeviceRecord {
  v: 1;
  serverId: string;
  directoryKey: string;
  identitySeed: string;
  deviceId: string;
  officialId: string;
  agencyId: string;
  certificate: string;
  deviceName: string;
  token: string | null;
  tokenExpiresAt: number;
  spk: Prekey;
  oldSpks: Prekey[];
  opks: Record<string, string>;
  nextOpkId: number;
  sessions: Record<string, SessionState[]>;
  bindings: Record<string, Binding>;
  peers: Record<string, PeerInfo>;
  replay: [number, string][]; // [signed prekey id, prekeyMessageDigest], kept exactly as long as that signed prekey (§E6a rules 4, 8)
  ownSenderKeys: Record<string, SenderKeyState & { sent?: number; at?: number }>;
  keyHolders: Record<string, string[]>;
  rotate: string[];
  groupKeys: Record<string, Record<string, SenderKeyState>>;
  convs: Record<string, ConvView>;
  names: Record<string, string>;
}

export type MsgState = "sending" | "sent" | "failed" | "received" | "unreadable";
/** A file a message carries (§E13), bytes in base64: kept only inside the sealed history. */
export interface MsgFile { id: string; key: string; sha256: string; size: number; name: string; type: string; thumb?: string }
/** `text` is the message, or a file's caption. */
export interface Msg { id: string; from: string; text: string; at: number; state: MsgState; reason?: string; file?: MsgFile }
export interface Chat { id: string; kind: "direct" | "group"; peer?: string; title: string; last: string; lastAt: number; unread: number }
interface OutboxItem { chatId: string; cmid: string; text: string; file?: MsgFile }
export type Status = "connecting" | "online" | "offline" | "revoked" | "displaced";

export class BlockedError extends Error {}
/** The recipient has no device to encrypt for: a client-side failure, not a server error code. */
export class NoDevicesError extends Error {}
export type { Member };

const newPrekeys = (first: number, n: number): Prekey[] =>
  Array.from({ length: n }, (_, i) => { const p = x25519Pair(); return { id: (first + i) % 2 ** 32, priv: b64(p.privateKey), pub: b64(p.publicKey) }; });

const toMsgFile = (r: FileRef): MsgFile => ({
  id: r.id, key: b64(r.key), sha256: b64(r.sha256), size: r.size, name: r.name, type: r.media_type,
  ...(r.thumbnail !== undefined ? { thumb: b64(r.thumbnail) } : {}),
});
const toFileRef = (f: MsgFile): FileRef => ({
  id: f.id, key: unb64(f.key), sha256: unb64(f.sha256), size: f.size, name: f.name, media_type: f.type,
  ...(f.thumb !== undefined ? { thumbnail: unb64(f.thumb) } : {}),
});
/** A message body as the user sees it: text, or a file and its caption (§E13). */
function readBody(body: Uint8Array): { text: string; file?: MsgFile } {
  if (!isFileBody(body)) return { text: fromUtf8(body) };
  const { caption, file } = decodeFileBody(body);
  return { text: caption, file: toMsgFile(file) };
}
const bodyOf = (item: { text: string; file?: MsgFile }): Uint8Array => (item.file ? encodeFileBody(toFileRef(item.file), item.text) : utf8(item.text));

const randomId = (): string => b64(randomBytes(12)).replace(/[+/=]/g, (c) => (c === "+" ? "-" : c === "/" ? "_" : "")); // [A-Za-z0-9_-]

export class Device {
  status: Status = "connecting";
  chats: Record<string, Chat> = {};
  private outbox: OutboxItem[] = [];
  private seen: string[] = [];
  private readonly history = new Map<string, Msg[]>();
  private wire: Wire | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** Pushed frames received and not yet handled. */
  private pushesWaiting = 0;
  private readonly acks = new Acks((positions) => this.wire?.send({ type: "ack", positions }));
  private stopped = false;
  private readonly identity: Ed25519Pair;
  private readonly listeners = new Set<() => void>();
  private currentRoles: string[] = [];
  /** Files opened or moving in this page (memory only). */
  readonly shelf = new Shelf();
  private readonly net: Net = { call: (frame) => this.request(frame), online: (signal) => this.whenOnline(signal) };

  private constructor(private readonly vault: Vault, readonly state: DeviceRecord) {
    this.identity = ed25519FromSeed(unb64(state.identitySeed));
  }

  // --- lifecycle ---------------------------------------------------------------

  static async load(vault: Vault): Promise<Device | null> {
    const state = await vault.get<DeviceRecord>("device");
    if (state === undefined) return null;
    const device = new Device(vault, state);
    device.chats = (await vault.get<Record<string, Chat>>("chats")) ?? {};
    device.outbox = (await vault.get<OutboxItem[]>("outbox")) ?? [];
    device.seen = (await vault.get<string[]>("seen")) ?? [];
    return device;
  }

  /** Enrol with a one-time code; the returned device is connected and authenticated. */
  static async enrol(vault: Vault, code: string, deviceName: string): Promise<Device> {
    const wire = await Wire.connect(nodeUrl());
    try {
      const identity = ed25519Generate();
      const [spk] = newPrekeys(readU32(randomBytes(4), 0) >>> 1, 1) as [Prekey];
      spk.at = Date.now();
      const firstOpk = readU32(randomBytes(4), 0) >>> 1;
      const opks = newPrekeys(firstOpk, PREKEY_BATCH);
      const reply = await wire.request({
        type: "enroll", code: code.trim(), identity_key: identity.publicKey,
        signature: sign(identity, authMessage(wire.challenge.serverId, wire.challenge.nonce)),
        signed_prekey: { key_id: spk.id, public_key: unb64(spk.pub), signature: sign(identity, signedPrekeyMessage(spk.id, unb64(spk.pub))) },
        one_time_prekeys: opks.map((p) => ({ key_id: p.id, public_key: unb64(p.pub) })),
        device_name: deviceName, platform: "web",
      });
      const directoryKey = reply["directory_key"] as Uint8Array;
      const cert = certificateFor(reply["certificate"] as Uint8Array, directoryKey, String(reply["official_id"]), String(reply["device_id"]), identity.publicKey);
      const state: DeviceRecord = {
        v: 1, serverId: wire.challenge.serverId, directoryKey: b64(directoryKey), identitySeed: b64(identity.seed),
        deviceId: cert.deviceId, officialId: cert.officialId, agencyId: cert.agencyId, certificate: b64(cert.raw), deviceName,
        token: String(reply["token"]), tokenExpiresAt: Number(reply["token_expires_at"]),
        spk, oldSpks: [], opks: Object.fromEntries(opks.map((p) => [String(p.id), p.priv])), nextOpkId: (firstOpk + PREKEY_BATCH) % 2 ** 32,
        sessions: {}, bindings: {}, peers: {}, replay: [], ownSenderKeys: {}, keyHolders: {}, rotate: [], groupKeys: {}, convs: {}, names: {},
      };
      state.peers[state.officialId] = { keys: { [state.deviceId]: b64(identity.publicKey) }, verified: null, changed: false };
      await vault.put("device", state);
      const device = new Device(vault, state);
      device.currentRoles = (reply["roles"] as string[] | undefined) ?? [];
      device.adopt(wire);
      return device;
    } catch (e) {
      wire.close();
      throw e;
    }
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(): void {
    for (const fn of this.listeners) fn();
  }

  get officialId(): string { return this.state.officialId; }
  /** The official's roles as the node said at the last authentication (the node checks every request anyway). */
  get roles(): readonly string[] { return this.currentRoles; }
  /** A plain request as this device, for the console's views (audit, administration). */
  call(frame: Frame): Promise<Frame> { return this.request(frame); }
  /** The device's sealed store, for the console's own records (the pinned audit key). */
  get store(): Vault { return this.vault; }
  get deviceId(): string { return this.state.deviceId; }

  start(): void {
    this.stopped = false;
    addEventListener("online", this.reconnectNow);
    if (this.wire === null) void this.connect(); // after enrolment the enrol connection is kept
  }

  stop(): void {
    this.stopped = true;
    removeEventListener("online", this.reconnectNow);
    if (this.timer !== null) clearTimeout(this.timer);
    this.wire?.close();
    this.wire = null;
  }

  /** Connect now if waiting to retry (the app was opened from a push notification). */
  wake(): void {
    this.reconnectNow();
  }

  private readonly reconnectNow = (): void => {
    if (this.status === "offline" && !this.stopped) {
      if (this.timer !== null) clearTimeout(this.timer);
      void this.connect();
    }
  };

  private setStatus(s: Status): void {
    this.status = s;
    this.emit();
  }

  private async connect(): Promise<void> {
    this.timer = null;
    this.setStatus("connecting");
    let wire: Wire;
    try {
      wire = await Wire.connect(nodeUrl());
      if (wire.challenge.serverId !== this.state.serverId) {
        wire.close();
        throw new Error("another deployment answered: refusing to sign its challenge");
      }
      await this.authenticate(wire);
    } catch (e) {
      const code = (e as { code?: number }).code;
      if (e instanceof ServerError && e.code === "auth_failed") return this.closed(4403);
      if (code !== undefined && (code === 4403 || code === 4409)) return this.closed(code);
      return this.closed(1006);
    }
    this.adopt(wire);
  }

  private async authenticate(wire: Wire): Promise<void> {
    let reply: Frame | null = null;
    if (this.state.token !== null && this.state.tokenExpiresAt > Date.now() + 5000) {
      try {
        reply = await wire.request({ type: "auth_token", token: this.state.token });
      } catch (e) {
        if (!(e instanceof ServerError) || e.code !== "token_invalid") throw e;
      }
    }
    reply ??= await wire.request({
      type: "auth", device_id: this.state.deviceId,
      signature: sign(this.identity, authMessage(wire.challenge.serverId, wire.challenge.nonce)),
    });
    this.state.token = String(reply["token"]);
    this.state.tokenExpiresAt = Number(reply["token_expires_at"]);
    this.currentRoles = (reply["roles"] as string[] | undefined) ?? [];
    await this.rotateSignedPrekeyIfDue(wire);
    // Archived sessions unused for 30 days go, also for peers that stay silent (§E6a rule 5);
    // saved with the next change of state (nothing is lost if not: they would go again).
    for (const [device, list] of Object.entries(this.state.sessions)) this.state.sessions[device] = expireArchivedSessions(list);
  }

  /** Every 7 days, on authentication; the two previous keys (and their replay entries) are kept. */
  private async rotateSignedPrekeyIfDue(wire: Wire): Promise<void> {
    const s = this.state;
    if (Date.now() - (s.spk.at ?? 0) < SIGNED_PREKEY_MAX_AGE_MS) return;
    const [fresh] = newPrekeys((s.spk.id + 1) % 2 ** 32, 1) as [Prekey];
    fresh.at = Date.now();
    await wire.request({ type: "upload_prekeys", one_time_prekeys: [], signed_prekey: { key_id: fresh.id, public_key: unb64(fresh.pub), signature: sign(this.identity, signedPrekeyMessage(fresh.id, unb64(fresh.pub))) } });
    s.oldSpks = [s.spk, ...s.oldSpks].slice(0, 2);
    s.spk = fresh;
    const kept = new Set([fresh.id, ...s.oldSpks.map((p) => p.id)]);
    s.replay = s.replay.filter(([id]) => kept.has(id));
    await this.save();
  }

  private adopt(wire: Wire): void {
    this.wire = wire;
    this.attempt = 0;
    this.acks.clear(); // a new connection pushes again whatever was not acked
    wire.onPush = (frame) => {
      this.pushesWaiting++;
      void this.serial(async () => {
        try {
          await this.onPush(frame);
        } finally {
          this.pushesWaiting--;
          this.acks.settle(this.pushesWaiting > 0);
        }
      });
    };
    wire.onClose = (code) => { if (this.wire === wire) { this.wire = null; this.closed(code); } };
    this.setStatus("online");
    this.serial(() => this.flushOutbox());
  }

  private closed(code: number): void {
    if (code === 4403) {
      this.stopped = true;
      this.setStatus("revoked");
      void this.vault.wipe(); // a revoked device keeps nothing
      return;
    }
    if (code === 4409) {
      this.stopped = true;
      this.setStatus("displaced");
      return;
    }
    this.setStatus("offline");
    if (this.stopped) return;
    // Jittered exponential backoff: 0.5 s x 2^n, +-50 %, at most 30 s.
    const base = Math.min(30_000, 500 * 2 ** this.attempt++);
    this.timer = setTimeout(() => void this.connect(), base * (0.5 + Math.random()));
  }

  /** Run state-changing work one piece at a time, in arrival order. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async request(frame: Frame): Promise<Frame> {
    if (this.wire === null || !this.wire.open) throw new Error("offline");
    return this.wire.request(frame);
  }

  private async save(): Promise<void> {
    await this.vault.put("device", this.state);
  }

  async signOut(): Promise<void> {
    this.stop();
    await this.vault.wipe();
  }

  // --- history -------------------------------------------------------------------

  async messages(chatId: string): Promise<Msg[]> {
    let list = this.history.get(chatId);
    if (list === undefined) {
      list = (await this.vault.get<Msg[]>(`h:${chatId}`)) ?? [];
      this.history.set(chatId, list);
    }
    return list;
  }

  private async record(chatId: string, msg: Msg, chat: Omit<Chat, "last" | "lastAt" | "unread">, unread: boolean): Promise<void> {
    const list = await this.messages(chatId);
    const i = list.findIndex((m) => m.id === msg.id);
    if (i >= 0) list[i] = msg;
    else list.push(msg);
    const old = this.chats[chatId];
    this.chats[chatId] = { ...chat, title: old?.title && chat.kind === "direct" ? old.title : chat.title, last: msg.file ? `${msg.file.name}${msg.text ? ` ${msg.text}` : ""}` : msg.text, lastAt: msg.at, unread: (old?.unread ?? 0) + (unread ? 1 : 0) };
    await this.vault.put(`h:${chatId}`, list);
    await this.vault.put("chats", this.chats);
  }

  async markRead(chatId: string): Promise<void> {
    const chat = this.chats[chatId];
    if (chat !== undefined && chat.unread > 0) {
      chat.unread = 0;
      await this.vault.put("chats", this.chats);
      this.emit();
    }
  }

  nameOf(official: string): string {
    if (official === this.state.officialId) return "";
    return this.state.names[official] ?? `…${official.slice(-6)}`;
  }

  async openDirect(official: string, name: string): Promise<string> {
    this.state.names[official] = name;
    const id = `d:${official}`;
    this.chats[id] ??= { id, kind: "direct", peer: official, title: name, last: "", lastAt: Date.now(), unread: 0 };
    this.chats[id]!.title = name;
    await this.vault.put("chats", this.chats);
    await this.save();
    this.emit();
    return id;
  }

  // --- sending ---------------------------------------------------------------------

  /** Queue a message; it is sent now if online, else when back online (the outbox survives reloads). */
  async sendText(chatId: string, text: string): Promise<void> {
    await this.enqueue(chatId, text);
  }

  private async enqueue(chatId: string, text: string, file?: MsgFile): Promise<void> {
    const chat = this.chats[chatId];
    if (chat === undefined) throw new Error("no such chat");
    const item: OutboxItem = { chatId, cmid: `w-${randomId()}`, text, ...(file ? { file } : {}) };
    this.outbox.push(item);
    await this.vault.put("outbox", this.outbox);
    await this.record(chatId, { id: item.cmid, from: this.state.officialId, text, at: Date.now(), state: "sending", ...(file ? { file } : {}) }, chat, false);
    this.emit();
    void this.serial(() => this.flushOutbox());
  }

  /**
   * Encrypt and upload a file for this chat's devices, then send the message
   * that refers to it (§E13). The upload picks up again after a dropped
   * connection while the page is open; `signal` cancels it (Cancelled).
   * The checked ciphertext is kept on this device so the file opens again
   * after a reload; the sender's own pick is shown from memory now.
   */
  async sendFile(chatId: string, file: File, caption: string, thumbnail: Uint8Array | undefined, onProgress?: Progress, signal?: AbortSignal): Promise<void> {
    const chat = this.chats[chatId];
    if (chat === undefined) throw new Error("no such chat");
    const target = chat.kind === "direct" ? { recipient: chat.peer! } : { conversation_id: chat.id.slice(2) };
    const up = await upload(this.net, file, target, onProgress, signal);
    if (signal?.aborted) throw new Cancelled("cancelled"); // the last bytes went up while cancel was pressed: send nothing
    await this.vault.putCiphertext(up.id, up.ciphertext);
    const ref: FileRef = {
      id: up.id, key: up.key, sha256: up.sha256, size: file.size, name: file.name || "file", media_type: file.type || "application/octet-stream",
      ...(thumbnail !== undefined ? { thumbnail } : {}),
    };
    this.shelf.ready(up.id, new Blob([file], { type: viewableType(ref.media_type) }));
    await this.enqueue(chatId, caption, toMsgFile(ref));
  }

  /** Show a message's file: the kept ciphertext, else fetched from the node; checked either way. */
  openFile(file: MsgFile): Promise<void> {
    return this.shelf.open(file.id, (onProgress, signal) => this.fetchFile(file, onProgress, signal));
  }

  private async fetchFile(file: MsgFile, onProgress: Progress, signal: AbortSignal): Promise<Blob> {
    const secrets = { id: file.id, key: unb64(file.key), sha256: unb64(file.sha256), size: file.size };
    const type = viewableType(file.type);
    const kept = await this.vault.getCiphertext(file.id);
    if (kept !== undefined) return decryptKept(kept, secrets, type);
    const { plain, ciphertext } = await download(this.net, secrets, type, onProgress, signal);
    await this.vault.putCiphertext(file.id, ciphertext);
    // Checked and kept: the node may delete its copy once every addressed device said so.
    await this.request({ type: "download_done", attachment_id: file.id }).catch(() => undefined);
    return plain;
  }

  /** Resolves when connected again (a transfer waits here after a drop). */
  private whenOnline(signal?: AbortSignal): Promise<void> {
    if (this.status === "online" && this.wire !== null) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const off = this.subscribe(() => {
        if (this.status === "online" && this.wire !== null) { off(); resolve(); }
        else if (this.stopped) { off(); reject(new Cancelled("the device stopped")); }
      });
      signal?.addEventListener("abort", () => { off(); reject(new Cancelled("cancelled")); });
    });
  }

  /** Retry a failed message with the same client message id (the server never stores it twice). */
  async retry(chatId: string, cmid: string): Promise<void> {
    const msg = (await this.messages(chatId)).find((m) => m.id === cmid);
    if (msg === undefined || msg.state !== "failed") return;
    msg.state = "sending";
    this.outbox.push({ chatId, cmid, text: msg.text, ...(msg.file ? { file: msg.file } : {}) });
    await this.vault.put("outbox", this.outbox);
    this.emit();
    void this.serial(() => this.flushOutbox());
  }

  private async flushOutbox(): Promise<void> {
    while (this.outbox.length > 0 && this.wire !== null) {
      const item = this.outbox[0]!;
      const chat = this.chats[item.chatId];
      let state: MsgState = "sent";
      let reason: string | undefined;
      try {
        if (chat === undefined) throw new Error("chat gone");
        if (chat.kind === "direct") {
          await this.sendPairwise(chat.peer!, { body: bodyOf(item), certificate: unb64(this.state.certificate) }, item.cmid);
        } else {
          await this.sendGroup(chat.id.slice(2), bodyOf(item), item.cmid);
        }
      } catch (e) {
        if (this.wire === null || (e instanceof Error && /closed|offline|timeout/.test(e.message))) return; // stays queued
        state = "failed";
        reason = e instanceof ServerError ? e.code : e instanceof BlockedError ? "blocked" : (e as Error).message;
      }
      this.outbox.shift();
      await this.vault.put("outbox", this.outbox);
      const list = await this.messages(item.chatId);
      const msg = list.find((m) => m.id === item.cmid);
      if (msg !== undefined) {
        msg.state = state;
        if (reason !== undefined) msg.reason = reason;
        await this.vault.put(`h:${item.chatId}`, list);
      }
      this.emit();
    }
  }

  private devicesOf(official: string): string[] {
    return Object.entries(this.state.bindings)
      .filter(([device, b]) => b.official === official && (this.state.sessions[device]?.length ?? 0) > 0)
      .map(([device]) => device);
  }

  /** Sessions with an official's devices (all, or the named ones), from verified bundles only. */
  private async establish(official: string, deviceIds: string[] | null): Promise<Set<string>> {
    const reply = await this.request({ type: "get_bundle", official_id: official, ...(deviceIds ? { device_ids: deviceIds } : {}) });
    return this.startSessions(official, reply["devices"] as Frame[]);
  }

  /**
   * The official's active devices as the directory lists them now (the CLI's
   * `sync_devices`): new ones are bound and get a session (the one-time
   * prekey the fetch spent is not wasted), bound ones no longer listed are
   * forgotten. Returns the certified identity keys of the listed devices.
   */
  private async syncDevices(official: string): Promise<Uint8Array[]> {
    const reply = await this.request({ type: "get_bundle", official_id: official });
    const devices = (reply["devices"] as Frame[]).filter((d) => String(d["device_id"]) !== this.state.deviceId);
    const listed = new Set(devices.map((d) => String(d["device_id"])));
    for (const [device, b] of Object.entries(this.state.bindings)) {
      if (b.official === official && device !== this.state.deviceId && !listed.has(device)) this.forgetDevice(device);
    }
    const known = new Set(this.devicesOf(official));
    await this.startSessions(official, devices.filter((d) => !known.has(String(d["device_id"]))));
    return devices.map((d) => certificateFor(d["certificate"] as Uint8Array, unb64(this.state.directoryKey), official, String(d["device_id"])).identityKey);
  }

  private startSessions(official: string, devices: Frame[]): Set<string> {
    const started = new Set<string>();
    for (const d of devices) {
      const deviceId = String(d["device_id"]);
      if (deviceId === this.state.deviceId) continue;
      const cert = certificateFor(d["certificate"] as Uint8Array, unb64(this.state.directoryKey), official, deviceId);
      const spk = d["signed_prekey"] as Frame;
      const otk = d["one_time_prekey"] as Frame | null;
      const session = initiate(this.identity, {
        identityKey: cert.identityKey, signedPrekeyId: Number(spk["key_id"]), signedPrekey: spk["public_key"] as Uint8Array,
        signedPrekeySignature: spk["signature"] as Uint8Array,
        oneTimePrekeyId: otk ? Number(otk["key_id"]) : null, oneTimePrekey: otk ? (otk["public_key"] as Uint8Array) : null,
      });
      this.bind(deviceId, official, cert.identityKey, cert.raw);
      this.state.sessions[deviceId] = expireArchivedSessions([{ ...session, usedAt: Date.now() }, ...(this.state.sessions[deviceId] ?? [])].slice(0, MAX_SESSIONS));
      started.add(deviceId);
    }
    return started;
  }

  /** Bind a device to an official from a verified certificate; note device changes. */
  private bind(device: string, official: string, identityKey: Uint8Array, certificate: Uint8Array): void {
    const old = this.state.bindings[device];
    if (old !== undefined && (old.official !== official || old.identityKey !== b64(identityKey))) throw new CryptoError("a binding never changes: another official or key for a bound device");
    this.state.bindings[device] = { official, identityKey: b64(identityKey), certificate: b64(certificate) };
    const peer = (this.state.peers[official] ??= { keys: {}, verified: null, changed: false });
    if (peer.keys[device] !== b64(identityKey)) {
      if (Object.keys(peer.keys).length > 0) peer.changed = true;
      peer.keys[device] = b64(identityKey);
    }
  }

  private forgetDevice(device: string): void {
    const b = this.state.bindings[device];
    delete this.state.sessions[device];
    if (b !== undefined) {
      const peer = this.state.peers[b.official];
      if (peer !== undefined && device in peer.keys) delete peer.keys[device]; // a device that goes away does not block
    }
  }

  private async sendPairwise(recipient: string, content: Content, cmid: string): Promise<void> {
    const own = this.state.officialId;
    const peer = this.state.peers[recipient];
    if (peer !== undefined && peer.verified !== null && peer.changed) throw new BlockedError("verified peer's devices changed");
    const raw = encodeContent(content);
    // Our own other devices learn whom it went to, to show it in that chat (§E6a); not needed for notes to self.
    const ownCopy = recipient === own ? raw : encodeContent({ ...content, recipient });
    if (this.devicesOf(recipient).length === 0) await this.establish(recipient, null);
    for (let attempt = 0; ; attempt++) {
      const targets = [...new Set([...this.devicesOf(recipient), ...this.devicesOf(own)])].filter((d) => d !== this.state.deviceId).sort();
      if (targets.length === 0) throw new NoDevicesError("no devices to encrypt for");
      const mine = new Set(this.devicesOf(own));
      const envelopes = targets.map((device) => {
        const s = this.state.sessions[device]![0]!;
        s.usedAt = Date.now();
        return { device_id: device, ciphertext: sessionEncrypt(s, mine.has(device) ? ownCopy : raw) };
      });
      try {
        await this.request({ type: "send", client_message_id: cmid, recipient, envelopes });
        await this.save();
        return;
      } catch (e) {
        if (!(e instanceof ServerError) || e.code !== "device_mismatch" || attempt === 3) throw e;
        for (const device of e.frame["stale"] as string[]) this.forgetDevice(device);
        let missing = (e.frame["missing"] as string[]).filter((d) => d !== this.state.deviceId);
        if (missing.length > 0) {
          const got = await this.establish(recipient, missing);
          missing = missing.filter((d) => !got.has(d));
        }
        if (missing.length > 0 && own !== recipient) await this.establish(own, missing);
        await this.save();
        this.emit();
        for (const official of [recipient, own]) {
          const p = this.state.peers[official];
          if (official !== own && p !== undefined && p.verified !== null && p.changed) throw new BlockedError("verified peer's devices changed");
        }
      }
    }
  }

  // --- receiving -------------------------------------------------------------------

  private async onPush(frame: Frame): Promise<void> {
    if (frame.type === "prekeys_low") return this.refillPrekeys();
    if (frame.type !== "deliver") return;
    const messageId = String(frame["message_id"]);
    const position = Number(frame["position"]);
    if (!this.seen.includes(messageId)) {
      try {
        await this.openDelivery(frame);
      } catch (e) {
        await this.unreadable(frame, e instanceof Error ? `${e.name}: ${e.message}` : "error");
      }
      this.seen.push(messageId);
      if (this.seen.length > SEEN_CACHE) this.seen.splice(0, this.seen.length - SEEN_CACHE);
      await this.save();
      await this.vault.put("seen", this.seen);
      this.emit();
    }
    this.acks.handled(position); // stored: acked with the rest of the burst
  }

  private async unreadable(frame: Frame, reason: string): Promise<void> {
    const kind = frame["kind"];
    if (kind === "membership") return; // a bad event is simply not applied
    const device = String(frame["sender_device"]);
    const bound = this.state.bindings[device]?.official;
    const from = bound ?? String(frame["sender_official"]);
    const at = Number(frame["sent_at"]);
    const id = String(frame["message_id"]);
    if (kind === "group") {
      const cid = String(frame["conversation_id"]);
      if (this.state.convs[cid] === undefined) return;
      await this.record(`g:${cid}`, { id, from, text: "", at, state: "unreadable", reason }, this.groupChat(cid), true);
    } else {
      await this.record(`d:${from}`, { id, from, text: "", at, state: "unreadable", reason }, this.directChat(from), true);
    }
  }

  private directChat(official: string): Omit<Chat, "last" | "lastAt" | "unread"> {
    return { id: `d:${official}`, kind: "direct", peer: official, title: this.nameOf(official) };
  }

  private groupChat(cid: string): Omit<Chat, "last" | "lastAt" | "unread"> {
    return { id: `g:${cid}`, kind: "group", title: this.state.convs[cid]?.title ?? "" };
  }

  private async openDelivery(frame: Frame): Promise<void> {
    const kind = frame["kind"];
    const ct = frame["ciphertext"] as Uint8Array;
    const device = String(frame["sender_device"]);
    const official = String(frame["sender_official"]);
    const id = String(frame["message_id"]);
    const at = Number(frame["sent_at"]);
    if (kind === "membership") {
      await this.applyEvent(ct, String(frame["conversation_id"]));
      return;
    }
    if (kind === "group") {
      const cid = String(frame["conversation_id"]);
      const binding = this.state.bindings[device];
      const key = this.state.groupKeys[cid]?.[device];
      if (binding === undefined || key === undefined) throw new CryptoError("no sender key of that device");
      if (binding.official !== official) throw new CryptoError("sender does not match the certificate");
      const [pt, next] = groupDecrypt(key, ct);
      this.state.groupKeys[cid]![device] = next;
      await this.record(`g:${cid}`, { id, from: binding.official, ...readBody(pt), at, state: "received" }, this.groupChat(cid), true);
      return;
    }
    const content = this.decryptPairwise(official, device, ct);
    const from = this.state.bindings[device]!.official;
    if (content.recipient !== undefined && from !== this.state.officialId) throw new CryptoError("only our own devices name the recipient of a message");
    if (content.sender_key !== undefined) {
      await this.takeDistribution(from, device, content);
      return;
    }
    const body = readBody(content.body);
    if (content.recipient !== undefined) {
      // A copy of what we sent from another of our devices: in the chat with whom it went to, as ours.
      await this.record(`d:${content.recipient}`, { id, from, ...body, at, state: "sent" }, this.directChat(content.recipient), false);
      return;
    }
    // From a peer, or a note to self from another of our devices (shown in our own notes).
    await this.record(`d:${from}`, { id, from, ...body, at, state: "received" }, this.directChat(from), from !== this.state.officialId);
  }

  private spkById(id: number): Prekey | undefined {
    return [this.state.spk, ...this.state.oldSpks].find((p) => p.id === id);
  }

  private decryptPairwise(official: string, device: string, ct: Uint8Array): Content {
    const stored = this.state.sessions[device] ?? [];
    const binding = this.state.bindings[device];
    // Nothing a frame says moves a device to another official.
    if (binding !== undefined && binding.official !== official) throw new CryptoError("sender does not match the certificate");
    for (let i = 0; i < stored.length; i++) {
      if (binding === undefined || stored[i]!.remoteIdentity !== binding.identityKey) continue; // only sessions with the certified key
      let pt: Uint8Array, next: SessionState;
      try {
        [pt, next] = sessionDecrypt(stored[i]!, ct);
      } catch {
        continue; // a failed decrypt changed nothing; try an older session
      }
      // The message key is spent whatever the content is: keep the step.
      stored.splice(i, 1);
      stored.unshift({ ...next, usedAt: Date.now() }); // the session the peer uses now is the one we answer on
      this.state.sessions[device] = expireArchivedSessions(stored);
      return decodeContent(pt);
    }
    const pm = parsePrekeyMessage(ct);
    const seenKey = prekeyMessageDigest(pm);
    if (this.state.replay.some(([id, k]) => id === pm.header.signedPrekeyId && k === seenKey)) throw new ReplayedMessage("prekey message accepted before");
    const spk = this.spkById(pm.header.signedPrekeyId);
    if (spk === undefined) throw new CryptoError("unknown signed prekey");
    let opk = null;
    if (pm.header.oneTimePrekeyId !== null) {
      const priv = this.state.opks[String(pm.header.oneTimePrekeyId)];
      if (priv === undefined) throw new CryptoError("one-time prekey already used or unknown");
      const p = unb64(priv);
      opk = { privateKey: p, publicKey: new Uint8Array(0) };
    }
    const [accepted, pt] = accept(this.identity, { privateKey: unb64(spk.priv), publicKey: unb64(spk.pub) }, opk, pm);
    const content = decodeContent(pt);
    certificateFor(content.certificate, unb64(this.state.directoryKey), official, device, pm.header.identityKey);
    if (pm.header.oneTimePrekeyId !== null) delete this.state.opks[String(pm.header.oneTimePrekeyId)];
    // No cap: an entry dropped early would let its prekey message be replayed (§E6a rule 4).
    this.state.replay.push([pm.header.signedPrekeyId, seenKey]);
    this.bind(device, official, pm.header.identityKey, content.certificate);
    // A new inbound session does not displace one the peer already answered on.
    const session = { ...accepted, usedAt: Date.now() };
    const keep = stored.length > 0 && stored[0]!.heardFrom && stored[0]!.pending === null;
    const list = keep ? [stored[0]!, session, ...stored.slice(1)] : [session, ...stored];
    this.state.sessions[device] = expireArchivedSessions(list.slice(0, MAX_SESSIONS));
    return content;
  }

  private async refillPrekeys(): Promise<void> {
    const fresh = newPrekeys(this.state.nextOpkId, PREKEY_BATCH);
    this.state.nextOpkId = (this.state.nextOpkId + PREKEY_BATCH) % 2 ** 32;
    for (const p of fresh) this.state.opks[String(p.id)] = p.priv;
    await this.save();
    await this.request({ type: "upload_prekeys", one_time_prekeys: fresh.map((p) => ({ key_id: p.id, public_key: unb64(p.pub) })) });
  }

  // --- trust: safety numbers and device changes ------------------------------------

  peer(official: string): PeerInfo | undefined {
    return this.state.peers[official];
  }

  private keysOf(official: string): Uint8Array[] {
    return Object.values(this.state.peers[official]?.keys ?? {}).map(unb64);
  }

  /**
   * Our safety number with an official over all active devices of both, as
   * the directory lists them now (certificates verified), computed the way
   * the reference client does, so both sides show the same 60 digits.
   * Offline, it falls back to the keys already known.
   */
  async safetyNumberWith(official: string): Promise<string> {
    const own = this.state.officialId;
    let theirs = this.keysOf(official);
    let mine = [this.identity.publicKey, ...this.keysOf(own).filter((k) => !equal(k, this.identity.publicKey))];
    if (this.wire !== null) {
      await this.serial(async () => {
        theirs = await this.syncDevices(official);
        if (official !== own) mine = [this.identity.publicKey, ...(await this.syncDevices(own))];
        await this.save();
      });
      this.emit();
    }
    return formatSafetyNumber(safetyNumber(own, mine, official, theirs));
  }

  async markVerified(official: string): Promise<void> {
    const peer = this.state.peers[official];
    if (peer === undefined) return;
    peer.verified = Object.values(peer.keys).sort();
    peer.changed = false;
    await this.save();
    this.emit();
  }

  async acceptChange(official: string): Promise<void> {
    const peer = this.state.peers[official];
    if (peer === undefined) return;
    peer.changed = false;
    if (peer.verified !== null) peer.verified = null; // accepted, not verified: the mark goes
    await this.save();
    this.emit();
    void this.serial(() => this.flushOutbox());
  }

  /** A session with this official was set up without a one-time prekey (its first message could be replayed to a device that lost its replay cache). */
  withoutOneTimePrekey(official: string): boolean {
    return this.devicesOf(official).some((d) => this.state.sessions[d]?.[0]?.noOneTimePrekey === true);
  }

  isVerified(official: string): boolean {
    const peer = this.state.peers[official];
    return peer?.verified != null && !peer.changed;
  }

  ownDevices(): { deviceId: string; current: boolean }[] {
    return Object.keys(this.state.peers[this.state.officialId]?.keys ?? {}).map((d) => ({ deviceId: d, current: d === this.state.deviceId }));
  }

  // --- directory -------------------------------------------------------------------

  // --- Web Push registration (PROTOCOL.md "Push notifications"; the browser side is push.ts) ---

  async pushConfig(): Promise<{ vapidKey: Uint8Array; registered: boolean }> {
    const reply = await this.request({ type: "get_push_config" });
    return { vapidKey: reply["vapid_public_key"] as Uint8Array, registered: reply["registered"] === true };
  }

  async registerPush(endpoint: string, p256dh: Uint8Array, auth: Uint8Array): Promise<void> {
    await this.request({ type: "register_push", endpoint, p256dh, auth });
  }

  async unregisterPush(): Promise<void> {
    await this.request({ type: "unregister_push" });
  }

  async search(query: string): Promise<Frame[]> {
    const reply = await this.request({ type: "search_officials", query, limit: 20 });
    return (reply["results"] as Frame[]).filter((r) => r["official_id"] !== this.state.officialId);
  }

  // --- groups (§E7, §E7a) ------------------------------------------------------------

  conversation(cid: string): ConvView | undefined {
    return this.state.convs[cid];
  }

  private async applyEvent(signed: Uint8Array, frameCid: string | null): Promise<ConvView | undefined> {
    const outer = decode(signed) as { event: Uint8Array; signature: Uint8Array };
    if (!(outer?.event instanceof Uint8Array) || !(outer.signature instanceof Uint8Array)) throw new InvalidMessage("bad membership event");
    verifyMembership(outer.event, outer.signature, unb64(this.state.directoryKey));
    const ev = decode(outer.event) as Record<string, unknown>;
    const cid = String(ev["conversation_id"]);
    if (frameCid !== null && frameCid !== cid) throw new CryptoError("membership event for another conversation");
    const view = this.state.convs[cid];
    const seq = Number(ev["seq"]);
    if (view !== undefined && seq <= view.seq) return view;
    const subjects = (ev["subjects"] as Member[]) ?? [];
    const action = String(ev["action"]);
    let members: Member[] | null = null;
    const gap = view !== undefined && seq > view.seq + 1;
    if (Array.isArray(ev["members"])) members = ev["members"] as Member[];
    else if (view !== undefined && !gap) {
      const ids = new Set(subjects.map((m) => m.official_id));
      if (action === "added") members = [...view.members, ...subjects];
      else if (action === "removed" || action === "left") members = view.members.filter((m) => !ids.has(m.official_id));
      else if (action === "promoted" || action === "demoted") members = view.members.map((m) => subjects.find((s) => s.official_id === m.official_id) ?? m);
      else members = view.members;
    }
    if (members !== null && !equal(membersDigest(members), ev["members_digest"] as Uint8Array)) members = null;
    const me = this.state.officialId;
    const out = (action === "removed" || action === "left") && subjects.some((m) => m.official_id === me);
    const s = this.state;
    if (out || (members !== null && !members.some((m) => m.official_id === me))) {
      delete s.ownSenderKeys[cid];
      delete s.groupKeys[cid];
      delete s.keyHolders[cid];
      s.convs[cid] = { id: cid, seq, kind: String(ev["kind"]), title: String(ev["title"]), announcementOnly: Boolean(ev["announcement_only"]), members: members ?? [] };
      return s.convs[cid];
    }
    if (members === null) {
      if (!s.rotate.includes(cid)) s.rotate.push(cid); // a change we could not follow: someone may have left
      return view;
    }
    const ids = new Set(members.map((m) => m.official_id));
    if (view !== undefined) {
      const departed = view.members.filter((m) => !ids.has(m.official_id)).map((m) => m.official_id);
      if (departed.length > 0 && !s.rotate.includes(cid)) s.rotate.push(cid);
      const senders = s.groupKeys[cid] ?? {};
      for (const d of Object.keys(senders)) if (departed.includes(s.bindings[d]?.official ?? "")) delete senders[d];
    }
    if (s.keyHolders[cid] !== undefined) s.keyHolders[cid] = s.keyHolders[cid]!.filter((o) => ids.has(o));
    s.convs[cid] = { id: cid, seq, kind: String(ev["kind"]), title: String(ev["title"]), announcementOnly: Boolean(ev["announcement_only"]), members };
    if (String(ev["kind"]) === "group") {
      const chat = this.chats[`g:${cid}`];
      this.chats[`g:${cid}`] = { ...(chat ?? { last: "", lastAt: Number(ev["at"]), unread: 0 }), id: `g:${cid}`, kind: "group", title: String(ev["title"]) };
      await this.vault.put("chats", this.chats);
    }
    return s.convs[cid];
  }

  private async conversationReply(reply: Frame): Promise<ConvView> {
    const view = await this.applyEvent(reply["event"] as Uint8Array, String(reply["conversation_id"]));
    await this.save();
    this.emit();
    if (view === undefined) throw new CryptoError("conversation state did not verify");
    return view;
  }

  async createGroup(title: string, members: string[], announcementOnly: boolean): Promise<string> {
    return this.serial(async () => {
      const view = await this.conversationReply(await this.request({ type: "create_group", title, members, announcement_only: announcementOnly }));
      return `g:${view.id}`;
    });
  }

  async addMembers(cid: string, officials: string[]): Promise<void> {
    await this.serial(async () => { await this.conversationReply(await this.request({ type: "add_members", conversation_id: cid, officials })); });
  }

  async removeMembers(cid: string, officials: string[]): Promise<void> {
    await this.serial(async () => { await this.conversationReply(await this.request({ type: "remove_members", conversation_id: cid, officials })); });
  }

  async leaveGroup(cid: string): Promise<void> {
    await this.serial(async () => { await this.conversationReply(await this.request({ type: "leave_group", conversation_id: cid })); });
  }

  async renameGroup(cid: string, title: string): Promise<void> {
    await this.serial(async () => { await this.conversationReply(await this.request({ type: "rename_group", conversation_id: cid, title })); });
  }

  isMember(cid: string): boolean {
    return this.state.convs[cid]?.members.some((m) => m.official_id === this.state.officialId) ?? false;
  }

  private async refreshConversation(cid: string): Promise<ConvView> {
    return this.conversationReply(await this.request({ type: "get_conversation", conversation_id: cid }));
  }

  private async takeDistribution(from: string, device: string, content: Content): Promise<void> {
    const cid = content.conversation_id;
    if (cid === undefined) throw new CryptoError("sender key without a conversation");
    let view = this.state.convs[cid];
    // A conversation we do not know yet, or a view that does not show the sender yet: fetch the signed state.
    if (view === undefined || !view.members.some((m) => m.official_id === from)) view = await this.refreshConversation(cid);
    const members = new Set(view.members.map((m) => m.official_id));
    if (!members.has(from) || !members.has(this.state.officialId)) throw new CryptoError("sender key from a non-member, or we left");
    const incoming = fromDistribution(content.sender_key!);
    const keys = (this.state.groupKeys[cid] ??= {});
    // A signing key another device of the conversation already uses is refused.
    if (Object.entries(keys).some(([d, k]) => d !== device && k.signingPublic === incoming.signingPublic)) throw new CryptoError("sender key of another device");
    keys[device] = acceptDistribution(keys[device], incoming); // only forward (§E7); throws for an older key id or another chain
  }

  private async distribute(cid: string): Promise<void> {
    const s = this.state;
    let key = s.ownSenderKeys[cid];
    const old = key !== undefined && ((key.sent ?? 0) >= SENDER_KEY_MAX_MESSAGES || Date.now() - (key.at ?? 0) >= SENDER_KEY_MAX_AGE_MS);
    if (key === undefined || s.rotate.includes(cid) || old) {
      key = { ...(key !== undefined ? rotateSenderKey(key) : generateSenderKey()), at: Date.now() };
      s.ownSenderKeys[cid] = key;
      s.keyHolders[cid] = [];
      s.rotate = s.rotate.filter((c) => c !== cid);
      await this.save();
    }
    const view = s.convs[cid]!;
    const holders = (s.keyHolders[cid] ??= []);
    const distribution = distributionMessage(key);
    for (const m of view.members) {
      if (holders.includes(m.official_id)) continue;
      const cmid = `sk-${b64(sha256(utf8(`${cid}|${key.keyId}|${m.official_id}`))).replace(/[+/=]/g, "").slice(0, 40)}`;
      try {
        await this.sendPairwise(m.official_id, { body: new Uint8Array(0), certificate: unb64(s.certificate), sender_key: distribution, conversation_id: cid }, cmid);
      } catch (e) {
        if (!(e instanceof NoDevicesError)) throw e; // nobody to give it to (yet)
      }
      holders.push(m.official_id);
      await this.save();
    }
  }

  private async sendGroup(cid: string, body: Uint8Array, cmid: string): Promise<void> {
    if (this.state.convs[cid] === undefined) await this.refreshConversation(cid);
    for (let attempt = 0; ; attempt++) {
      await this.distribute(cid);
      const view = this.state.convs[cid]!;
      const key = this.state.ownSenderKeys[cid]!;
      const ciphertext = groupEncrypt(key, body);
      key.sent = (key.sent ?? 0) + 1;
      await this.save(); // never reuse a message key
      try {
        await this.request({ type: "send_group", client_message_id: cmid, conversation_id: cid, seq: view.seq, ciphertext });
        return;
      } catch (e) {
        if (!(e instanceof ServerError) || e.code !== "stale_membership" || attempt === 3) throw e;
        await this.refreshConversation(cid);
      }
    }
  }

  canPost(cid: string): boolean {
    const view = this.state.convs[cid];
    if (view === undefined) return false;
    const me = view.members.find((m) => m.official_id === this.state.officialId);
    return me !== undefined && (!view.announcementOnly || me.admin);
  }
}

export { verifyCertificate };
