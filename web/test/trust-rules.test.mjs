// The client trust rules that are pure functions, tested as an attacker would try them.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as c from "../build/crypto.mjs";

before(async () => { await c.loadSodium(); });

test("a delayed distribution cannot roll a sender key back (replayed group messages stay refused)", () => {
  const sender = c.generateSenderKey(41);
  const early = c.distributionMessage(sender); // what the server holds back
  const messages = [0, 1, 2].map((i) => c.groupEncrypt(sender, c.utf8(`m${i}`)));
  let held = c.fromDistribution(early);
  for (const m of messages) [, held] = c.groupDecrypt(held, m);
  // The server now delivers the old distribution again, then replays the messages.
  const replayed = c.fromDistribution(early);
  assert.equal(c.takesDistribution(held, replayed), "keep");
  for (const m of messages) assert.throws(() => c.groupDecrypt(held, m), c.ReplayedMessage);
  // A later distribution of the same key id (further along the chain) is not taken either.
  assert.equal(c.takesDistribution(held, c.fromDistribution(c.distributionMessage(sender))), "keep");
});

test("older key ids are refused, newer ones taken; first key ids leave room to rotate", () => {
  const at = (id) => c.fromDistribution(c.distributionMessage(c.generateSenderKey(id)));
  assert.equal(c.takesDistribution(undefined, at(7)), "take");
  assert.equal(c.takesDistribution(at(7), at(8)), "take");
  assert.equal(c.takesDistribution(at(8), at(7)), "refuse");
  assert.equal(c.takesDistribution(at(8), at(8)), "keep");
  for (let i = 0; i < 50; i++) assert.ok(c.generateSenderKey().keyId < 2 ** 31);
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
