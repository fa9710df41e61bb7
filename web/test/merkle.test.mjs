// The audit log's Merkle checks (web/src/crypto/merkle.ts) against known
// answers from gchat/audit/merkle.py (web/tools/make_vectors.py): the same
// leaf, node and root hashes, Python's proofs accepted, and the broken
// proofs Python refuses refused here too.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as c from "../build/crypto.mjs";

const m = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8")).merkle;
const x = (s) => c.fromHex(s);
const root = (n) => x(m.roots[String(n)]);
const leaf = (i) => x(m.leaf_hashes[i]);

before(async () => { await c.loadSodium(); });

test("leaf, node and empty-tree hashes equal Python's", () => {
  m.entries.forEach((e, i) => assert.equal(c.hex(c.leafHash(c.utf8(e))), m.leaf_hashes[i]));
  assert.equal(c.hex(c.nodeHash(x(m.node_hash.left), x(m.node_hash.right))), m.node_hash.hash);
  assert.equal(c.hex(c.emptyRoot()), m.roots["0"]);
});

test("every inclusion proof Python made verifies, and only against its own root", () => {
  for (const { index, size, proof } of m.inclusion) {
    const p = proof.map(x);
    assert.ok(c.verifyInclusion(leaf(index), index, size, p, root(size)), `leaf ${index} of ${size}`);
    if (size > 1) assert.equal(c.verifyInclusion(leaf(index), index, size, p, root(size - 1)), false);
  }
});

test("broken inclusion proofs are refused, as Python refuses them", () => {
  for (const b of m.bad_inclusion) {
    assert.equal(c.verifyInclusion(x(b.leaf), b.index, b.size, b.proof.map(x), root(b.size === 13 ? 13 : b.size)), false, b.why);
  }
  const good = m.inclusion.find((i) => i.size === 13 && i.index === 6);
  const p = good.proof.map(x);
  assert.ok(c.verifyInclusion(leaf(6), 6, 13, p, root(13)));
  // Malformed input is "does not verify", never an exception.
  assert.equal(c.verifyInclusion(leaf(6), 6, 13, [...p.slice(0, -1), p.at(-1).slice(1)], root(13)), false);
  assert.equal(c.verifyInclusion(leaf(6), -1, 13, p, root(13)), false);
  assert.equal(c.verifyInclusion(leaf(6), 6.5, 13, p, root(13)), false);
  assert.equal(c.verifyInclusion(leaf(6), 6, 13, "nope", root(13)), false);
  assert.equal(c.verifyInclusion(leaf(6), 6, 13, p, root(13).slice(1)), false);
});

test("every consistency proof Python made verifies", () => {
  for (const { old, new: n, proof } of m.consistency) {
    assert.ok(c.verifyConsistency(old, n, root(old), root(n), proof.map(x)), `${old} -> ${n}`);
  }
});

test("broken consistency proofs are refused, as Python refuses them", () => {
  for (const b of m.bad_consistency) {
    assert.equal(c.verifyConsistency(b.old, b.new, root(b.old), root(b.new), b.proof.map(x)), false, b.why);
  }
  const good = m.consistency.find((i) => i.old === 8 && i.new === 13).proof.map(x);
  assert.ok(c.verifyConsistency(8, 13, root(8), root(13), good));
  // A rewritten old tree (another root at size 8) is not a prefix.
  assert.equal(c.verifyConsistency(8, 13, root(7), root(13), good), false);
  assert.equal(c.verifyConsistency(13, 8, root(13), root(8), good), false);
  assert.equal(c.verifyConsistency(13, 13, root(13), root(12), []), false);
  assert.equal(c.verifyConsistency(0, 5, root(1), root(5), []), false);
});

test("a signed tree head verifies with the audit key, and nothing changed does", () => {
  const t = m.tree_head;
  const head = { tree_size: t.tree_size, timestamp_ms: t.timestamp_ms, root_hash: x(t.root_hash), signature: x(t.signature), key_id: x(t.key_id) };
  assert.equal(c.hex(c.treeHeadMessage(t.tree_size, t.timestamp_ms, x(t.root_hash))), t.message);
  assert.equal(c.hex(c.auditKeyId(x(t.public_key))), t.key_id);
  assert.ok(c.verifyTreeHead(head, x(t.public_key)));
  assert.equal(c.verifyTreeHead(head, x(t.other_key)), false, "another key");
  const sig = x(t.signature);
  sig[10] ^= 1;
  assert.equal(c.verifyTreeHead({ ...head, signature: sig }, x(t.public_key)), false, "bad signature");
  assert.equal(c.verifyTreeHead({ ...head, tree_size: 12 }, x(t.public_key)), false, "other size");
  assert.equal(c.verifyTreeHead({ ...head, timestamp_ms: t.timestamp_ms + 1 }, x(t.public_key)), false, "other time");
  assert.equal(c.verifyTreeHead({ ...head, root_hash: root(12) }, x(t.public_key)), false, "other root");
  assert.equal(c.verifyTreeHead(null, x(t.public_key)), false);
  assert.equal(c.verifyTreeHead({ ...head, tree_size: "13" }, x(t.public_key)), false);
});
