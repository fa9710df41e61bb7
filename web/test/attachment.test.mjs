// File encryption (PROTOCOL.md §E13) in the browser's code: sizes, the
// restart that resumes uploads, and refusal of altered, truncated and
// extended ciphertexts. Interoperation with the Python client is shown by
// tests/web/test_browser_files.py (real CLI and browser, both ways).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as c from "../build/crypto.mjs";

before(async () => { await c.loadSodium(); });

function encrypt(key, plain, enc = c.FileEncryptor.start(key, plain.length)) {
  const parts = [enc.header];
  while (!enc.done) {
    const [a, b] = enc.nextRange;
    parts.push(enc.push(plain.subarray(a, b)));
  }
  return { ct: c.concat(...parts), sha: enc.sha256(), header: enc.header };
}

function decrypt(key, sha, size, ct, piece = 1000) {
  const d = new c.FileDecryptor(key, sha, size);
  const out = [];
  for (let i = 0; i < ct.length; i += piece) out.push(...d.feed(ct.subarray(i, i + piece)));
  out.push(...d.finish());
  return c.concat(...out);
}

const sample = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff);

test("sizes follow 24 + size + 17n, and every size round-trips", () => {
  const key = c.newFileKey();
  for (const n of [0, 1, 65535, 65536, 65537, 3 * 65536, 200_000]) {
    const plain = sample(n);
    const { ct, sha } = encrypt(key, plain);
    assert.equal(ct.length, c.ciphertextSize(n));
    assert.equal(ct.length, 24 + n + 17 * Math.max(1, Math.ceil(n / 65536)));
    assert.deepEqual(decrypt(key, sha, n, ct, 7777), plain);
    assert.deepEqual(c.sha256(ct), sha);
  }
});

test("restart from the header reproduces the ciphertext byte for byte (upload resume)", () => {
  const key = c.newFileKey();
  const plain = sample(150_000);
  const first = encrypt(key, plain);
  const again = encrypt(key, plain, c.FileEncryptor.restart(key, plain.length, first.header));
  assert.deepEqual(again.ct, first.ct);
  assert.deepEqual(again.sha, first.sha);
  const other = encrypt(key, plain); // a fresh start: another header, another ciphertext
  assert.notDeepEqual(other.ct, first.ct);
});

test("an altered byte, a wrong hash, a cut or an extension is refused, never returned", () => {
  const key = c.newFileKey();
  const plain = sample(140_000);
  const { ct, sha } = encrypt(key, plain);
  for (const at of [0, 30, 65_600, ct.length - 1]) {
    const bad = ct.slice();
    bad[at] ^= 1;
    assert.throws(() => decrypt(key, sha, plain.length, bad), c.AttachmentTampered);
  }
  const wrongHash = sha.slice();
  wrongHash[0] ^= 1;
  assert.throws(() => decrypt(key, wrongHash, plain.length, ct), c.AttachmentTampered);
  assert.throws(() => decrypt(key, sha, plain.length, ct.subarray(0, 24 + 65536 + 17)), c.AttachmentTruncated);
  assert.throws(() => decrypt(key, sha, plain.length, ct.subarray(0, ct.length - 1)), c.AttachmentTruncated);
  assert.throws(() => decrypt(key, sha, plain.length, c.concat(ct, new Uint8Array([0]))), c.AttachmentTruncated);
  assert.throws(() => decrypt(c.newFileKey(), sha, plain.length, ct), c.AttachmentTampered);
});

test("the file body: 0xFF, exactly the §E13 keys, names made harmless", () => {
  const ref = { id: "0b5e7d3c-9a1f-4c2e-8d7b-1f2e3d4c5b6a", key: c.newFileKey(), sha256: new Uint8Array(32).fill(9), size: 12, name: "รายงาน.pdf", media_type: "application/pdf" };
  const body = c.encodeFileBody(ref, "บันทึก");
  assert.equal(body[0], 0xff);
  const back = c.decodeFileBody(body);
  assert.equal(back.caption, "บันทึก");
  assert.deepEqual(back.file, ref);
  assert.equal(c.isFileBody(new TextEncoder().encode("สวัสดี")), false);
  assert.throws(() => c.decodeFileBody(c.concat(new Uint8Array([0xff]), new TextEncoder().encode("{}"))), c.InvalidMessage);
  assert.throws(() => c.decodeFileBody(c.encodeFileBody({ ...ref, key: new Uint8Array(31) })), c.InvalidMessage);
  assert.equal(c.safeFileName("../../etc/passwd"), "passwd");
  assert.equal(c.safeFileName("C:\\x\\..hidden\u0007.txt"), "hidden.txt");
  assert.equal(c.safeFileName("..."), "attachment");
  assert.ok(new TextEncoder().encode(c.safeFileName("ก".repeat(200))).length <= 255);
});

test("a thumbnail over 32 KiB is ignored, the file still readable", () => {
  const ref = { id: "0b5e7d3c-9a1f-4c2e-8d7b-1f2e3d4c5b6a", key: c.newFileKey(), sha256: new Uint8Array(32), size: 1, name: "a.jpg", media_type: "image/jpeg" };
  assert.deepEqual(c.decodeFileBody(c.encodeFileBody({ ...ref, thumbnail: new Uint8Array(32 * 1024) })).file.thumbnail.length, 32 * 1024);
  assert.equal(c.decodeFileBody(c.encodeFileBody({ ...ref, thumbnail: new Uint8Array(32 * 1024 + 1) })).file.thumbnail, undefined);
});
