// PROTOCOL.md Part II's worked examples, computed by the browser's crypto code.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as c from "../build/crypto.mjs";

before(async () => { await c.loadSodium(); });

const nonce = Uint8Array.from({ length: 32 }, (_, i) => i);

test("E3.1 auth message for node-1.gchat.go.th", () => {
  assert.equal(c.hex(c.authMessage("node-1.gchat.go.th", nonce)),
    "67636861742e617574682e7631" + "0012" + "6e6f64652d312e67636861742e676f2e7468" +
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
});

test("9.1 auth message for gchat is 52 bytes", () => {
  const m = c.authMessage("gchat", nonce);
  assert.equal(m.length, 52);
  assert.equal(c.hex(m.subarray(0, 20)), "67636861742e617574682e7631" + "0005" + "6763686174");
});

test("E8 pinned safety-number half", () => {
  assert.equal(c.fingerprintDigits("00000000-0000-0000-0000-000000000000", [nonce]),
    "773237938493351189573136003040");
});

test("E8 the number is the same from both sides and groups by five", () => {
  const other = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
  const a = c.safetyNumber("00000000-0000-0000-0000-000000000001", [nonce], "00000000-0000-0000-0000-000000000002", [other]);
  const b = c.safetyNumber("00000000-0000-0000-0000-000000000002", [other], "00000000-0000-0000-0000-000000000001", [nonce]);
  assert.equal(a, b);
  assert.equal(a.length, 60);
  assert.equal(c.formatSafetyNumber(a).split(" ").length, 12);
});

test("E5 a ratchet round trip, and a replay is refused without changing state", () => {
  const bob = { privateKey: c.randomBytes(32) };
  const sk = c.randomBytes(32), ad = c.randomBytes(64);
  const spk = c.x25519Pair();
  let alice = c.ratchetInitiator(sk, spk.publicKey, ad);
  let bobState = c.ratchetResponder(sk, spk, ad);
  const m1 = c.ratchetEncrypt(alice, c.utf8("สวัสดี"));
  const [pt, next] = c.ratchetDecrypt(bobState, m1);
  assert.equal(c.fromUtf8(pt), "สวัสดี");
  const saved = JSON.stringify(next);
  assert.throws(() => c.ratchetDecrypt(next, m1), c.ReplayedMessage);
  assert.equal(JSON.stringify(next), saved);
  assert.ok(bob);
});
