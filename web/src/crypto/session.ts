/**
 * X3DH (§E4), the Double Ratchet (§E5) and pairwise messages (§E6), as plain
 * JSON-serialisable state objects. Decryption always works on a copy that is
 * committed only when the AEAD tag verified, so a forged or replayed message
 * leaves the state untouched.
 */
import { b64, concat, equal, hex, readU32, u32be, unb64 } from "./bytes";
import { DecryptionFailed, InvalidKey, InvalidMessage, InvalidState, ReplayedMessage, TooManySkippedMessages } from "./errors";
import { verifySignedPrekey } from "./formats";
import {
  chainKdf, checkX25519Public, dh, ed2xPrivate, ed2xPublic, hkdf, open, rootKdf, seal, sha256, x25519Pair,
  type Ed25519Pair, type X25519Pair,
} from "./primitives";

export const MAX_SKIP = 1000;
export const MAX_STORED_SKIPPED = 2000;
/** A skipped message key is deleted this long after it was stored (§E5). */
export const SKIPPED_KEY_LIFETIME_MS = 30 * 24 * 3600 * 1000;
/** An archived session (not the first, the one we send on) unused this long is deleted (§E6a rule 5). */
export const ARCHIVED_SESSION_LIFETIME_MS = 30 * 24 * 3600 * 1000;
const U32_MAX = 0xffffffff;
const MAX_PREVIOUS_REMOTE = 32;

export interface Bundle {
  identityKey: Uint8Array;
  signedPrekeyId: number;
  signedPrekey: Uint8Array;
  signedPrekeySignature: Uint8Array;
  oneTimePrekeyId: number | null;
  oneTimePrekey: Uint8Array | null;
}

export interface X3DHHeader {
  identityKey: Uint8Array;
  ephemeralKey: Uint8Array;
  signedPrekeyId: number;
  oneTimePrekeyId: number | null;
}

export function headerBytes(h: X3DHHeader): Uint8Array {
  const base = concat(h.identityKey, h.ephemeralKey, u32be(h.signedPrekeyId));
  return h.oneTimePrekeyId === null ? concat(base, new Uint8Array([0])) : concat(base, new Uint8Array([1]), u32be(h.oneTimePrekeyId));
}

export function parseHeader(data: Uint8Array): [X3DHHeader, number] {
  if (data.length < 69) throw new InvalidMessage("X3DH header truncated");
  const h = { identityKey: data.slice(0, 32), ephemeralKey: data.slice(32, 64), signedPrekeyId: readU32(data, 64) };
  if (data[68] === 0) return [{ ...h, oneTimePrekeyId: null }, 69];
  if (data[68] === 1 && data.length >= 73) return [{ ...h, oneTimePrekeyId: readU32(data, 69) }, 73];
  throw new InvalidMessage("bad X3DH header flag or truncated");
}

function x3dhKdf(dhs: Uint8Array[]): Uint8Array {
  return hkdf(concat(new Uint8Array(32).fill(0xff), ...dhs), new Uint8Array(32), "gchat.x3dh.v1", 32);
}

export function x3dhInitiate(identity: Ed25519Pair, bundle: Bundle, ephemeral: X25519Pair = x25519Pair()): { sk: Uint8Array; ad: Uint8Array; header: X3DHHeader } {
  verifySignedPrekey(bundle.identityKey, bundle.signedPrekeyId, bundle.signedPrekey, bundle.signedPrekeySignature);
  if ((bundle.oneTimePrekey === null) !== (bundle.oneTimePrekeyId === null)) throw new InvalidKey("one-time prekey and id");
  const dhs = [
    dh(ed2xPrivate(identity), bundle.signedPrekey),
    dh(ephemeral.privateKey, ed2xPublic(bundle.identityKey)),
    dh(ephemeral.privateKey, bundle.signedPrekey),
  ];
  if (bundle.oneTimePrekey !== null) {
    checkX25519Public(bundle.oneTimePrekey);
    dhs.push(dh(ephemeral.privateKey, bundle.oneTimePrekey));
  }
  return {
    sk: x3dhKdf(dhs),
    ad: concat(identity.publicKey, bundle.identityKey),
    header: { identityKey: identity.publicKey, ephemeralKey: ephemeral.publicKey, signedPrekeyId: bundle.signedPrekeyId, oneTimePrekeyId: bundle.oneTimePrekeyId },
  };
}

export function x3dhRespond(identity: Ed25519Pair, spk: X25519Pair, opk: X25519Pair | null, header: X3DHHeader): { sk: Uint8Array; ad: Uint8Array } {
  if ((header.oneTimePrekeyId === null) !== (opk === null)) throw new InvalidKey("one-time prekey mismatch");
  const ikA = ed2xPublic(header.identityKey);
  const dhs = [dh(spk.privateKey, ikA), dh(ed2xPrivate(identity), header.ephemeralKey), dh(spk.privateKey, header.ephemeralKey)];
  if (opk !== null) dhs.push(dh(opk.privateKey, header.ephemeralKey));
  return { sk: x3dhKdf(dhs), ad: concat(header.identityKey, identity.publicKey) };
}

/** Ratchet state; byte strings are base64 so it round-trips through JSON. */
export interface RatchetState {
  dhsPrivate: string;
  dhsPublic: string;
  dhr: string | null;
  rk: string;
  cks: string | null;
  ckr: string | null;
  ns: number;
  nr: number;
  pn: number;
  ad: string;
  skipped: [string, number, string, number?][]; // [ratchet key, n, message key, stored at ms], oldest first
  previousRemote: string[];
}

export function ratchetInitiator(sk: Uint8Array, remote: Uint8Array, ad: Uint8Array): RatchetState {
  const own = x25519Pair();
  const [rk, cks] = rootKdf(sk, dh(own.privateKey, remote));
  return { dhsPrivate: b64(own.privateKey), dhsPublic: b64(own.publicKey), dhr: b64(remote), rk: b64(rk), cks: b64(cks), ckr: null, ns: 0, nr: 0, pn: 0, ad: b64(ad), skipped: [], previousRemote: [] };
}

export function ratchetResponder(sk: Uint8Array, own: X25519Pair, ad: Uint8Array): RatchetState {
  return { dhsPrivate: b64(own.privateKey), dhsPublic: b64(own.publicKey), dhr: null, rk: b64(sk), cks: null, ckr: null, ns: 0, nr: 0, pn: 0, ad: b64(ad), skipped: [], previousRemote: [] };
}

export function ratchetEncrypt(s: RatchetState, plaintext: Uint8Array): Uint8Array {
  if (s.cks === null) throw new InvalidState("cannot send before the first message was received");
  if (s.ns >= 0xffffffff - 1) throw new InvalidState("sending chain exhausted");
  const [mk, next] = chainKdf(unb64(s.cks));
  s.cks = b64(next);
  const header = concat(unb64(s.dhsPublic), u32be(s.pn), u32be(s.ns));
  s.ns += 1;
  return concat(header, seal(mk, plaintext, concat(unb64(s.ad), header)));
}

function skip(s: RatchetState, until: number, now: number): void {
  if (s.ckr === null || s.dhr === null) return;
  if (until - s.nr > MAX_SKIP) throw new TooManySkippedMessages(`more than ${MAX_SKIP} skipped messages`);
  let ck = unb64(s.ckr);
  while (s.nr < until) {
    const [mk, next] = chainKdf(ck);
    s.skipped.push([s.dhr, s.nr, b64(mk), now]);
    ck = next;
    s.nr += 1;
  }
  s.ckr = b64(ck);
  if (s.skipped.length > MAX_STORED_SKIPPED) s.skipped.splice(0, s.skipped.length - MAX_STORED_SKIPPED);
}

function dhRatchet(s: RatchetState, remote: string): void {
  if (s.dhr !== null) {
    s.previousRemote.push(s.dhr);
    s.previousRemote = s.previousRemote.slice(-MAX_PREVIOUS_REMOTE);
  }
  s.pn = s.ns;
  s.ns = 0;
  s.nr = 0;
  s.dhr = remote;
  const [rk1, ckr] = rootKdf(unb64(s.rk), dh(unb64(s.dhsPrivate), unb64(remote)));
  const own = x25519Pair();
  const [rk2, cks] = rootKdf(rk1, dh(own.privateKey, unb64(remote)));
  s.rk = b64(rk2);
  s.ckr = b64(ckr);
  s.cks = b64(cks);
  s.dhsPrivate = b64(own.privateKey);
  s.dhsPublic = b64(own.publicKey);
}

/** Decrypt; returns the plaintext and the new state (the input state is never modified). */
export function ratchetDecrypt(state: RatchetState, message: Uint8Array, now = Date.now()): [Uint8Array, RatchetState] {
  if (message.length < 40) throw new InvalidMessage("ratchet message truncated");
  const header = message.subarray(0, 40);
  const dhKey = b64(header.subarray(0, 32));
  const pn = readU32(header, 32);
  const n = readU32(header, 36);
  if (n === U32_MAX || pn === U32_MAX) throw new InvalidMessage("message counter out of range");
  const s: RatchetState = structuredClone(state);
  s.skipped = s.skipped.filter((e) => e[3] === undefined || now - e[3] < SKIPPED_KEY_LIFETIME_MS);
  const ad = concat(unb64(s.ad), header);
  let mk: Uint8Array | null = null;
  const i = s.skipped.findIndex(([k, m]) => k === dhKey && m === n);
  if (i >= 0) {
    mk = unb64(s.skipped[i]![2]);
    s.skipped.splice(i, 1);
  } else {
    if (s.dhr !== null && dhKey === s.dhr) {
      if (n < s.nr) throw new ReplayedMessage("message key already used");
    } else if (s.previousRemote.includes(dhKey) || dhKey === s.dhsPublic) {
      throw new ReplayedMessage("message from a finished chain");
    } else {
      // One forged header costs at most MAX_SKIP derivations, both chains together.
      if (s.ckr !== null && pn - s.nr + n > MAX_SKIP) throw new TooManySkippedMessages(`more than ${MAX_SKIP} skipped messages`);
      skip(s, pn, now);
      try {
        dhRatchet(s, dhKey);
      } catch {
        throw new DecryptionFailed("bad ratchet key");
      }
    }
    if (s.ckr === null) throw new DecryptionFailed("no receiving chain for this ratchet key");
    skip(s, n, now);
    const [key, next] = chainKdf(unb64(s.ckr));
    mk = key;
    s.ckr = b64(next);
    s.nr += 1;
  }
  return [open(mk, message.subarray(40), ad), s];
}

/** A pairwise session with one remote device (§E6). */
export interface SessionState {
  localIdentity: string;
  remoteIdentity: string;
  pending: string | null; // initiator: X3DH header bytes until the peer replied
  accepted: string | null; // responder: the header this session was built from
  ratchet: RatchetState;
  /** Set once the peer has sent on this session (rule: a new inbound session does not displace a working one before that). */
  heardFrom: boolean;
  /** Set up without a one-time prekey (the user is told: weaker against replay of the first message). */
  noOneTimePrekey: boolean;
  /** When this session last encrypted or decrypted (ms); archived sessions expire by it. */
  usedAt?: number;
}

/**
 * A device's sessions after deleting the archived ones (every one but the
 * first) unused for 30 days (§E6a rule 5). A session stored before this
 * field existed counts as used now, so it gets its full 30 days.
 */
export function expireArchivedSessions(list: SessionState[], now = Date.now()): SessionState[] {
  return list
    .map((s) => (s.usedAt === undefined ? { ...s, usedAt: now } : s))
    .filter((s, i) => i === 0 || now - s.usedAt! < ARCHIVED_SESSION_LIFETIME_MS);
}

/**
 * What the replay cache remembers of an accepted prekey message (§E6a rule
 * 4): hex SHA-256 of identity key, ephemeral key, u32be signed prekey id and
 * the one-time prekey flag and id, which are exactly the X3DH header's bytes.
 */
export const prekeyMessageDigest = (pm: PrekeyMessage): string => hex(sha256(pm.headerRaw));

export function initiate(identity: Ed25519Pair, bundle: Bundle): SessionState {
  const r = x3dhInitiate(identity, bundle);
  return {
    localIdentity: b64(identity.publicKey), remoteIdentity: b64(bundle.identityKey),
    pending: b64(headerBytes(r.header)), accepted: null,
    ratchet: ratchetInitiator(r.sk, bundle.signedPrekey, r.ad),
    heardFrom: false, noOneTimePrekey: bundle.oneTimePrekey === null,
  };
}

export interface PrekeyMessage {
  header: X3DHHeader;
  headerRaw: Uint8Array;
  ratchetMessage: Uint8Array;
}

export function parsePrekeyMessage(data: Uint8Array): PrekeyMessage {
  if (data.length < 1 || data[0] !== 0x01) throw new InvalidMessage("not a prekey message");
  const [header, used] = parseHeader(data.subarray(1));
  return { header, headerRaw: data.slice(1, 1 + used), ratchetMessage: data.slice(1 + used) };
}

export function accept(identity: Ed25519Pair, spk: X25519Pair, opk: X25519Pair | null, pm: PrekeyMessage): [SessionState, Uint8Array] {
  const { sk, ad } = x3dhRespond(identity, spk, opk, pm.header);
  const [plaintext, ratchet] = ratchetDecrypt(ratchetResponder(sk, spk, ad), pm.ratchetMessage);
  return [{
    localIdentity: b64(identity.publicKey), remoteIdentity: b64(pm.header.identityKey),
    pending: null, accepted: b64(pm.headerRaw), ratchet, heardFrom: true, noOneTimePrekey: opk === null,
  }, plaintext];
}

export function sessionEncrypt(s: SessionState, plaintext: Uint8Array): Uint8Array {
  const inner = ratchetEncrypt(s.ratchet, plaintext);
  return s.pending !== null ? concat(new Uint8Array([1]), unb64(s.pending), inner) : concat(new Uint8Array([2]), inner);
}

/** Decrypt with this session; throws InvalidMessage for a prekey message of another handshake. */
export function sessionDecrypt(s: SessionState, data: Uint8Array): [Uint8Array, SessionState] {
  if (data.length < 1 || (data[0] !== 1 && data[0] !== 2)) throw new InvalidMessage("unknown pairwise message type");
  if (data[0] === 2) {
    const [pt, ratchet] = ratchetDecrypt(s.ratchet, data.subarray(1));
    return [pt, { ...s, ratchet, pending: null, heardFrom: true }];
  }
  const pm = parsePrekeyMessage(data);
  if (s.accepted === null || !equal(unb64(s.accepted), pm.headerRaw)) throw new InvalidMessage("prekey message for another session");
  const [pt, ratchet] = ratchetDecrypt(s.ratchet, pm.ratchetMessage);
  return [pt, { ...s, ratchet }];
}
