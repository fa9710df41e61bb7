// Known answers produced by the Python implementation (web/tools/make_vectors.py):
// the browser's code must compute the same bytes and open what Python sealed.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as c from "../build/crypto.mjs";
import { encode } from "@msgpack/msgpack";

const v = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const x = (s) => c.fromHex(s);

before(async () => { await c.loadSodium(); });

test("HKDF-SHA256", () => {
  assert.equal(c.hex(c.hkdf(x(v.hkdf.ikm), x(v.hkdf.salt), v.hkdf.info, v.hkdf.length)), v.hkdf.okm);
});

test("KDF_CK and KDF_RK", () => {
  const [mk, next] = c.chainKdf(x(v.kdf.ck));
  assert.equal(c.hex(mk), v.kdf.mk);
  assert.equal(c.hex(next), v.kdf.next_ck);
  const [rk, ck] = c.rootKdf(x(v.kdf.rk), x(v.kdf.dh));
  assert.equal(c.hex(rk), v.kdf.new_rk);
  assert.equal(c.hex(ck), v.kdf.chain);
});

test("auth message and its Ed25519 signature", () => {
  const m = c.authMessage(v.auth_message.server_id, x(v.auth_message.nonce));
  assert.equal(c.hex(m), v.auth_message.message);
  assert.equal(c.hex(c.sign(c.ed25519FromSeed(x(v.auth_message.identity_seed)), m)), v.auth_message.signature);
});

test("signed prekey message, and a changed key id fails", () => {
  const s = v.signed_prekey;
  assert.equal(c.hex(c.signedPrekeyMessage(s.key_id, x(s.public_key))), s.message);
  c.verifySignedPrekey(x(s.identity_public), s.key_id, x(s.public_key), x(s.signature));
  assert.throws(() => c.verifySignedPrekey(x(s.identity_public), s.key_id + 1, x(s.public_key), x(s.signature)), c.InvalidSignature);
});

test("X3DH from fixed keys gives Python's SK, AD and header", () => {
  const t = v.x3dh;
  const alice = c.ed25519FromSeed(x(t.alice_seed));
  const bob = c.ed25519FromSeed(x(t.bob_seed));
  const pair = (priv) => ({ privateKey: x(priv), publicKey: c.fromHex(c.hex(c.x25519Public(x(priv)))) });
  const spk = pair(t.spk_private), opk = pair(t.opk_private), eph = pair(t.ephemeral_private);
  const r = c.x3dhInitiate(alice, { identityKey: bob.publicKey, signedPrekeyId: 7, signedPrekey: spk.publicKey, signedPrekeySignature: x(t.spk_signature), oneTimePrekeyId: 99, oneTimePrekey: opk.publicKey }, eph);
  assert.equal(c.hex(r.sk), t.sk);
  assert.equal(c.hex(r.ad), t.ad);
  assert.equal(c.hex(c.headerBytes(r.header)), t.header);
  const [header] = c.parseHeader(x(t.header));
  const back = c.x3dhRespond(bob, spk, opk, header);
  assert.equal(c.hex(back.sk), t.sk);
});

test("the browser accepts a Python session and reads its messages; a replay fails", () => {
  const s = v.session;
  const bob = c.ed25519FromSeed(x(s.bob_seed));
  const spk = { privateKey: x(s.spk_private), publicKey: c.x25519Public(x(s.spk_private)) };
  const opk = { privateKey: x(s.opk_private), publicKey: c.x25519Public(x(s.opk_private)) };
  const [session, first] = c.accept(bob, spk, opk, c.parsePrekeyMessage(x(s.messages[0])));
  assert.equal(c.fromUtf8(first), s.plaintexts[0]);
  const [second, next] = c.sessionDecrypt(session, x(s.messages[1]));
  assert.equal(c.fromUtf8(second), s.plaintexts[1]);
  assert.throws(() => c.sessionDecrypt(next, x(s.messages[1])), c.ReplayedMessage);
});

test("sender keys: Python's group messages, out of order, each once", () => {
  const s = v.sender_key;
  let state = c.fromDistribution(x(s.distribution));
  assert.equal(c.hex(c.distributionMessage(state)), s.distribution);
  let pt;
  [pt, state] = c.groupDecrypt(state, x(s.messages[2]));
  assert.equal(c.fromUtf8(pt), s.plaintexts[2]);
  [pt, state] = c.groupDecrypt(state, x(s.messages[0]));
  assert.equal(c.fromUtf8(pt), s.plaintexts[0]);
  assert.throws(() => c.groupDecrypt(state, x(s.messages[0])), c.ReplayedMessage);
  const forged = x(s.messages[1]);
  forged[20] ^= 1;
  assert.throws(() => c.groupDecrypt(state, forged), c.InvalidSignature);
  [pt] = c.groupDecrypt(state, x(s.messages[1]));
  assert.equal(c.fromUtf8(pt), s.plaintexts[1]);
});

test("device certificate: fields, and one flipped bit refused", () => {
  const t = v.certificate;
  const cert = c.verifyCertificate(x(t.bytes), x(t.directory_public));
  assert.equal(cert.officialId, t.official_id);
  assert.equal(cert.agencyId, t.agency_id);
  assert.equal(cert.deviceId, t.device_id);
  assert.equal(c.hex(cert.identityKey), t.identity_key);
  assert.equal(cert.issuedAt, t.issued_at);
  const bad = x(t.bytes);
  bad[5] ^= 1;
  assert.throws(() => c.verifyCertificate(bad, x(t.directory_public)), c.InvalidCertificate);
  assert.throws(() => c.certificateFor(x(t.bytes), x(t.directory_public), t.official_id, t.official_id), c.InvalidCertificate);
});

test("safety number", () => {
  const t = v.safety_number;
  assert.equal(c.fingerprintDigits(t.official_a, t.keys_a.map(x)), t.half_a);
  assert.equal(c.safetyNumber(t.official_b, t.keys_b.map(x), t.official_a, t.keys_a.map(x)), t.number);
});

test("membership digest", () => {
  assert.equal(c.hex(c.membersDigest(v.members_digest.members)), v.members_digest.digest);
});

test("content map: the same bytes as the reference client, both kinds", () => {
  const t = v.content;
  const plain = c.decodeContent(x(t.plain));
  assert.equal(c.fromUtf8(plain.body), "ทดสอบ");
  assert.equal(c.hex(c.encodeContent(plain)), t.plain);
  const dist = c.decodeContent(x(t.distribution));
  assert.equal(dist.conversation_id, t.conversation_id);
  assert.equal(c.hex(c.encodeContent(dist)), t.distribution);
  assert.throws(() => c.decodeContent(encode({ ...plain, extra: 1 })), c.InvalidMessage);
  assert.throws(() => c.decodeContent(encode({ body: "text", certificate: plain.certificate })), c.InvalidMessage);
});
