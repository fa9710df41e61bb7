/** Sender keys for groups (§E7): one signed chain per member device and conversation. */
import { b64, concat, readU32, u32be, unb64 } from "./bytes";
import { DecryptionFailed, InvalidMessage, InvalidState, ReplayedMessage, TooManySkippedMessages } from "./errors";
import { chainKdf, ed25519FromSeed, ed25519Generate, open, randomBytes, seal, secretEqual, sign, verify } from "./primitives";

export const DISTRIBUTION_SIZE = 73;
const MAX_SKIP = 1000;
const MAX_STORED_SKIPPED = 2000;
/** A skipped group message key is deleted this long after it was stored (§E7). */
export const SENDER_SKIPPED_KEY_LIFETIME_MS = 30 * 24 * 3600 * 1000;

export interface SenderKeyState {
  keyId: number;
  iteration: number;
  chainKey: string;
  signingPublic: string;
  signingSeed: string | null; // only the owner's copy
  skipped: [number, string, number?][]; // [message number, message key, stored at ms], oldest first
}

export function generateSenderKey(keyId?: number): SenderKeyState {
  const signer = ed25519Generate();
  return {
    // The first key id is random in 0 .. 2^31-1 (§E7).
    keyId: keyId ?? readU32(randomBytes(4), 0) >>> 1, iteration: 0, chainKey: b64(randomBytes(32)),
    signingPublic: b64(signer.publicKey), signingSeed: b64(signer.seed), skipped: [],
  };
}

export const rotateSenderKey = (s: SenderKeyState): SenderKeyState => generateSenderKey((s.keyId + 1) % 2 ** 32);

export function distributionMessage(s: SenderKeyState): Uint8Array {
  return concat(new Uint8Array([4]), u32be(s.keyId), u32be(s.iteration), unb64(s.chainKey), unb64(s.signingPublic));
}

export function fromDistribution(data: Uint8Array): SenderKeyState {
  if (data.length !== DISTRIBUTION_SIZE || data[0] !== 4) throw new InvalidMessage("malformed sender key distribution message");
  return { keyId: readU32(data, 1), iteration: readU32(data, 5), chainKey: b64(data.slice(9, 41)), signingPublic: b64(data.slice(41, 73)), signingSeed: null, skipped: [] };
}

export function groupEncrypt(s: SenderKeyState, plaintext: Uint8Array): Uint8Array {
  if (s.signingSeed === null) throw new InvalidState("receiving sender key state cannot encrypt");
  if (s.iteration >= 0xffffffff - 1) throw new InvalidState("sender key chain exhausted; rotate");
  const [mk, next] = chainKdf(unb64(s.chainKey));
  s.chainKey = b64(next);
  const header = concat(new Uint8Array([3]), u32be(s.keyId), u32be(s.iteration));
  s.iteration += 1;
  const body = concat(header, seal(mk, plaintext, header));
  return concat(body, sign(ed25519FromSeed(unb64(s.signingSeed)), body));
}

export function groupKeyId(message: Uint8Array): number {
  if (message.length < 9 + 40 + 64 || message[0] !== 3) throw new InvalidMessage("malformed group message");
  return readU32(message, 1);
}

/** Verify (signature first), then decrypt; returns the plaintext and the new state. */
export function groupDecrypt(state: SenderKeyState, message: Uint8Array, now = Date.now()): [Uint8Array, SenderKeyState] {
  const keyId = groupKeyId(message);
  const body = message.subarray(0, message.length - 64);
  if (keyId !== state.keyId) throw new DecryptionFailed("group message for another sender key id");
  verify(unb64(state.signingPublic), body, message.subarray(message.length - 64));
  const n = readU32(body, 5);
  if (n === 0xffffffff) throw new InvalidMessage("message number out of range");
  const s: SenderKeyState = structuredClone(state);
  s.skipped = s.skipped.filter((e) => e[2] === undefined || now - e[2] < SENDER_SKIPPED_KEY_LIFETIME_MS);
  let mk: Uint8Array;
  const i = s.skipped.findIndex(([m]) => m === n);
  if (i >= 0) {
    mk = unb64(s.skipped[i]![1]);
    s.skipped.splice(i, 1);
  } else {
    if (n < s.iteration) throw new ReplayedMessage("group message key already used");
    if (n - s.iteration > MAX_SKIP) throw new TooManySkippedMessages("too many skipped messages");
    let ck = unb64(s.chainKey);
    while (s.iteration < n) {
      const [k, next] = chainKdf(ck);
      s.skipped.push([s.iteration, b64(k), now]);
      ck = next;
      s.iteration += 1;
    }
    if (s.skipped.length > MAX_STORED_SKIPPED) s.skipped.splice(0, s.skipped.length - MAX_STORED_SKIPPED);
    const [k, next] = chainKdf(ck);
    mk = k;
    s.chainKey = b64(next);
    s.iteration += 1;
  }
  return [open(mk, body.subarray(9), body.subarray(0, 9)), s];
}

/**
 * The receiving state after a distribution from the same sender device
 * (PROTOCOL.md §E7, "only forward"), or an error:
 *
 * - nothing held, or a higher key id: the distribution is the state (the sender rotated);
 * - a lower key id: ReplayedMessage;
 * - the same key id must be the same chain: the same signing key, and the
 *   chain key derived forward from the one behind reaches the one ahead
 *   (InvalidMessage otherwise). One ahead of the held iteration moves the
 *   chain there and keeps the keys skipped on the way (those messages stay
 *   readable); one at or behind changes nothing, so a delayed copy cannot
 *   make messages already read readable again.
 *
 * First key ids are below 2^31 and rotation adds one, so they never wrap.
 */
export function acceptDistribution(current: SenderKeyState | undefined, incoming: SenderKeyState, now = Date.now()): SenderKeyState {
  if (current === undefined || incoming.keyId > current.keyId) return incoming;
  if (incoming.keyId < current.keyId) throw new ReplayedMessage("distribution for an older sender key id");
  if (incoming.signingPublic !== current.signingPublic) throw new InvalidMessage("same sender key id with another signing key");
  const [behind, ahead] = incoming.iteration <= current.iteration ? [incoming, current] : [current, incoming];
  if (ahead.iteration - behind.iteration > MAX_SKIP) throw new TooManySkippedMessages(`distribution more than ${MAX_SKIP} messages away`);
  const moved: SenderKeyState = structuredClone(current);
  let chain = unb64(behind.chainKey);
  for (let n = behind.iteration; n < ahead.iteration; n++) {
    const [mk, next] = chainKdf(chain);
    if (behind === current) moved.skipped.push([n, b64(mk), now]);
    chain = next;
  }
  if (!secretEqual(chain, unb64(ahead.chainKey))) throw new InvalidMessage("distribution is not on the chain held for this key id");
  if (behind !== current) return current;
  moved.chainKey = b64(chain);
  moved.iteration = ahead.iteration;
  if (moved.skipped.length > MAX_STORED_SKIPPED) moved.skipped.splice(0, moved.skipped.length - MAX_STORED_SKIPPED);
  return moved;
}
