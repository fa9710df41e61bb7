// The client trust rules that are pure functions, tested as an attacker would try them.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { encode } from "@msgpack/msgpack";
import * as c from "../build/crypto.mjs";

before(async () => { await c.loadSodium(); });

test("a delayed distribution cannot roll a sender key back (replayed group messages stay refused)", () => {
  const sender = c.generateSenderKey(41);
  const early = c.distributionMessage(sender); // what the server holds back
  const messages = [0, 1, 2].map((i) => c.groupEncrypt(sender, c.utf8(`m${i}`)));
  let held = c.fromDistribution(early);
  for (const m of messages) [, held] = c.groupDecrypt(held, m);
  // The server now delivers the old distribution again, then replays the messages.
  const after = c.acceptDistribution(held, c.fromDistribution(early));
  assert.equal(JSON.stringify(after), JSON.stringify(held));
  for (const m of messages) assert.throws(() => c.groupDecrypt(after, m), c.ReplayedMessage);
});

test("a distribution of the same key id further along moves the chain forward, keeping the skipped keys (§E7)", () => {
  const sender = c.generateSenderKey(41);
  const held = c.fromDistribution(c.distributionMessage(sender));
  const skipped = [0, 1, 2].map((i) => c.groupEncrypt(sender, c.utf8(`s${i}`)));
  const later = c.fromDistribution(c.distributionMessage(sender)); // iteration 3
  const moved = c.acceptDistribution(held, later);
  assert.equal(moved.iteration, 3);
  assert.equal(moved.chainKey, later.chainKey);
  const next = c.groupEncrypt(sender, c.utf8("next"));
  assert.equal(c.fromUtf8(c.groupDecrypt(moved, next)[0]), "next");
  // The messages sent before the later distribution stay readable, each once.
  let s = moved;
  for (let i = 0; i < 3; i++) {
    let pt;
    [pt, s] = c.groupDecrypt(s, skipped[i]);
    assert.equal(c.fromUtf8(pt), `s${i}`);
    assert.throws(() => c.groupDecrypt(s, skipped[i]), c.ReplayedMessage);
  }
});

test("a same-key-id distribution off the held chain, or with another signing key, is refused", () => {
  const sender = c.generateSenderKey(41);
  const held = c.fromDistribution(c.distributionMessage(sender));
  c.groupEncrypt(sender, c.utf8("x"));
  const forged = c.fromDistribution(c.distributionMessage(sender));
  forged.chainKey = c.b64(c.randomBytes(32)); // the attacker's chain, the sender's signing key
  assert.throws(() => c.acceptDistribution(held, forged), c.InvalidMessage);
  const otherSigner = c.fromDistribution(c.distributionMessage(c.generateSenderKey(41)));
  assert.throws(() => c.acceptDistribution(held, otherSigner), c.InvalidMessage);
  // Too far ahead to check without more than MAX_SKIP derivations.
  const far = c.fromDistribution(c.distributionMessage(sender));
  far.iteration = held.iteration + 1001;
  assert.throws(() => c.acceptDistribution(held, far), c.TooManySkippedMessages);
});

test("older key ids are refused, newer ones taken; first key ids leave room to rotate", () => {
  const at = (id) => c.fromDistribution(c.distributionMessage(c.generateSenderKey(id)));
  assert.equal(c.acceptDistribution(undefined, at(7)).keyId, 7);
  assert.equal(c.acceptDistribution(at(7), at(8)).keyId, 8);
  assert.throws(() => c.acceptDistribution(at(8), at(7)), c.ReplayedMessage);
  for (let i = 0; i < 50; i++) assert.ok(c.generateSenderKey().keyId < 2 ** 31);
});

test("sender keys: skipped group message keys expire after 30 days", () => {
  const sender = c.generateSenderKey(5);
  const held = c.fromDistribution(c.distributionMessage(sender));
  const late = c.groupEncrypt(sender, c.utf8("late"));
  const first = c.groupEncrypt(sender, c.utf8("first"));
  const t0 = Date.now();
  const [, s] = c.groupDecrypt(held, first, t0);
  assert.equal(c.fromUtf8(c.groupDecrypt(s, late, t0 + 1000)[0]), "late");
  assert.throws(() => c.groupDecrypt(s, late, t0 + 31 * 24 * 3600 * 1000), c.ReplayedMessage);
});

test("archived sessions unused for 30 days are deleted, never the first (§E6a rule 5)", () => {
  const day = 24 * 3600 * 1000, now = Date.now();
  const session = (tag, usedAt) => ({ remoteIdentity: tag, usedAt });
  const list = [session("first", now - 90 * day), session("fresh", now - 29 * day), session("stale", now - 30 * day), session("legacy", undefined)];
  const kept = c.expireArchivedSessions(list, now);
  assert.deepEqual(kept.map((s) => s.remoteIdentity), ["first", "fresh", "legacy"]);
  // A session stored before the field existed gets its 30 days from now.
  assert.equal(kept[2].usedAt, now);
  assert.deepEqual(c.expireArchivedSessions(kept, now + 30 * day).map((s) => s.remoteIdentity), ["first"]);
});

test("the replay cache key is §E6a rule 4's SHA-256 over the prekey message's handshake fields", () => {
  const ik = c.randomBytes(32), ek = c.randomBytes(32);
  const withOpk = c.concat(new Uint8Array([1]), ik, ek, c.u32be(7), new Uint8Array([1]), c.u32be(9), c.randomBytes(80));
  const without = c.concat(new Uint8Array([1]), ik, ek, c.u32be(7), new Uint8Array([0]), c.randomBytes(80));
  assert.equal(c.prekeyMessageDigest(c.parsePrekeyMessage(withOpk)), c.hex(c.sha256(c.concat(ik, ek, c.u32be(7), new Uint8Array([1]), c.u32be(9)))));
  assert.equal(c.prekeyMessageDigest(c.parsePrekeyMessage(without)), c.hex(c.sha256(c.concat(ik, ek, c.u32be(7), new Uint8Array([0])))));
  assert.notEqual(c.prekeyMessageDigest(c.parsePrekeyMessage(withOpk)), c.prekeyMessageDigest(c.parsePrekeyMessage(without)));
});

test("ratchet: one forged header costs at most MAX_SKIP derivations over both chains", () => {
  const sk = c.randomBytes(32), ad = c.randomBytes(64);
  const spk = c.x25519Pair();
  const alice = c.ratchetInitiator(sk, spk.publicKey, ad);
  let bob = c.ratchetResponder(sk, spk, ad);
  [, bob] = c.ratchetDecrypt(bob, c.ratchetEncrypt(alice, c.utf8("hello")));
  // A header with a new ratchet key claiming PN = 600 and n = 600 (1,199 keys to derive).
  const forged = c.ratchetEncrypt(alice, c.utf8("x"));
  forged.set(c.x25519Pair().publicKey, 0);
  forged.set(c.u32be(600), 32);
  forged.set(c.u32be(600), 36);
  const before = JSON.stringify(bob);
  assert.throws(() => c.ratchetDecrypt(bob, forged), c.TooManySkippedMessages);
  assert.equal(JSON.stringify(bob), before);
  forged.set(c.u32be(0xffffffff), 36);
  assert.throws(() => c.ratchetDecrypt(bob, forged), c.InvalidMessage);
});

test("ratchet: skipped keys expire after 30 days", () => {
  const sk = c.randomBytes(32), ad = c.randomBytes(64);
  const spk = c.x25519Pair();
  const alice = c.ratchetInitiator(sk, spk.publicKey, ad);
  const m0 = c.ratchetEncrypt(alice, c.utf8("late"));
  const m1 = c.ratchetEncrypt(alice, c.utf8("first"));
  const t0 = Date.now();
  const [, bob] = c.ratchetDecrypt(c.ratchetResponder(sk, spk, ad), m1, t0);
  assert.equal(c.fromUtf8(c.ratchetDecrypt(bob, m0, t0 + 1000)[0]), "late");
  assert.throws(() => c.ratchetDecrypt(bob, m0, t0 + 31 * 24 * 3600 * 1000), c.DecryptionFailed);
});

test("a rotated key cannot be opened with the old chain", () => {
  const first = c.generateSenderKey(1);
  const old = c.fromDistribution(c.distributionMessage(first));
  const next = c.rotateSenderKey(first);
  assert.equal(next.keyId, 2);
  assert.throws(() => c.groupDecrypt(old, c.groupEncrypt(next, c.utf8("after removal"))), c.DecryptionFailed);
});

test("a certificate for another device or official is refused", () => {
  const directory = c.ed25519Generate();
  const device = c.ed25519Generate();
  const body = c.concat(new Uint8Array([1]), c.uuidBytes("00000000-0000-4000-8000-000000000001"),
    c.uuidBytes("00000000-0000-4000-8000-000000000002"), c.uuidBytes("00000000-0000-4000-8000-000000000003"),
    device.publicKey, c.u64be(1764000000));
  const cert = c.concat(body, c.sign(directory, c.concat(c.utf8("gchat.cert.v1"), body)));
  const ok = c.certificateFor(cert, directory.publicKey, "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000003", device.publicKey);
  assert.equal(ok.agencyId, "00000000-0000-4000-8000-000000000002");
  // The server relabels the device as the Minister's: refused.
  assert.throws(() => c.certificateFor(cert, directory.publicKey, "00000000-0000-4000-8000-0000000000ff", "00000000-0000-4000-8000-000000000003"), c.InvalidCertificate);
  // Another key under a genuine certificate: refused.
  assert.throws(() => c.certificateFor(cert, directory.publicKey, "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000003", c.ed25519Generate().publicKey), c.InvalidCertificate);
  // A certificate signed by anyone but the pinned directory key: refused.
  assert.throws(() => c.verifyCertificate(cert, c.ed25519Generate().publicKey), c.InvalidCertificate);
});

test("a prekey message for another handshake is not taken by an existing session", () => {
  const alice = c.ed25519Generate(), bob = c.ed25519Generate();
  const spk = c.x25519Pair();
  const bundle = { identityKey: bob.publicKey, signedPrekeyId: 3, signedPrekey: spk.publicKey,
    signedPrekeySignature: c.sign(bob, c.signedPrekeyMessage(3, spk.publicKey)), oneTimePrekeyId: null, oneTimePrekey: null };
  const a1 = c.initiate(alice, bundle);
  const [b1] = c.accept(bob, spk, null, c.parsePrekeyMessage(c.sessionEncrypt(a1, c.utf8("one"))));
  const a2 = c.initiate(alice, bundle);
  assert.throws(() => c.sessionDecrypt(b1, c.sessionEncrypt(a2, c.utf8("two"))), c.InvalidMessage);
  assert.equal(a1.noOneTimePrekey, true);
});

test("content: a copy for our own devices names the recipient; anything but a UUID string is refused", () => {
  const to = "0b7e7a52-3f0e-4c8e-9d1a-2f4b6c8d0e1f";
  const base = { body: c.utf8("hi"), certificate: c.randomBytes(153) };
  const copy = c.decodeContent(c.encodeContent({ ...base, recipient: to }));
  assert.equal(copy.recipient, to);
  assert.equal(c.decodeContent(c.encodeContent(base)).recipient, undefined);
  // Ordinary content is unchanged on the wire (no recipient key at all).
  assert.ok(c.encodeContent({ ...base, recipient: to }).length > c.encodeContent(base).length);
  for (const bad of ["not-a-uuid", 7, c.utf8(to)]) {
    assert.throws(() => c.decodeContent(encode({ body: base.body, certificate: base.certificate, recipient: bad })), c.InvalidMessage);
  }
});
