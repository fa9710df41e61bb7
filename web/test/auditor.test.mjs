// The auditor's console logic (web/src/audit/auditor.ts) against a stand-in
// node that serves the Python implementation's signed heads and proofs
// (web/tools/make_vectors.py): what it verifies, what it remembers in the
// sealed store, and what it reports when the node lies.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as c from "../build/crypto.mjs";
import * as au from "../build/audit.mjs";

const v = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const m = v.merkle;
const x = (s) => c.fromHex(s);
const th = m.tree_head;
const head13 = { tree_size: 13, timestamp_ms: th.timestamp_ms, root_hash: x(th.root_hash), signature: x(th.signature), key_id: x(th.key_id) };
const head8 = { tree_size: 8, timestamp_ms: th.older.timestamp_ms, root_hash: x(th.older.root_hash), signature: x(th.older.signature), key_id: x(th.key_id) };

before(async () => { await c.loadSodium(); });

class Store {
  constructor() { this.records = new Map(); }
  async get(name) { return this.records.has(name) ? structuredClone(this.records.get(name)) : undefined; }
  async put(name, value) { this.records.set(name, structuredClone(value)); }
}

/** A stand-in node: answers from the vectors; `heads` is what successive fresh-head requests get. */
function node(heads) {
  const asked = [];
  const call = async (f) => {
    asked.push(f);
    if (f.type === "audit_get_tree_head") return { type: "audit_tree_head", head: heads.shift() };
    if (f.type === "audit_get_consistency") {
      const p = m.consistency.find((i) => i.old === f.old_size && i.new === f.new_size);
      return { type: "audit_consistency", proof: (p?.proof ?? []).map(x) };
    }
    if (f.type === "audit_get_inclusion") {
      const p = m.inclusion.find((i) => i.index === f.leaf_index && i.size === f.tree_size);
      return { type: "audit_inclusion", proof: p.proof.map(x), entry: m.entries[f.leaf_index], leaf_hash: x(m.leaf_hashes[f.leaf_index]) };
    }
    throw new Error(`unexpected ${f.type}`);
  };
  return { call, asked };
}

const event = (i, entry = m.entries[i]) => ({ id: 100 + i, leafIndex: i, kind: "message.accepted", time: 0, entry, fields: JSON.parse(entry) });

test("nothing is verified before a key is pinned, and a malformed key is refused", async () => {
  const store = new Store();
  const a = new au.Auditor(node([head13]).call, store);
  await a.load();
  assert.deepEqual(await a.checkHead(), { ok: false, problem: "no_key" });
  await assert.rejects(a.pin("abc"), au.BadAuditKey);
  assert.equal(store.records.size, 0);
});

test("first visit remembers the verified head; the next visit needs a consistency proof from it", async () => {
  const store = new Store();
  const n = node([head8, head13]);
  const a = new au.Auditor(n.call, store);
  await a.load();
  await a.pin(th.public_key);
  assert.equal(au.keyFingerprint(x(th.public_key)).replaceAll(" ", ""), th.key_id);
  const first = await a.checkHead();
  assert.equal(first.ok, true);
  assert.equal(first.previous, undefined);
  assert.equal(store.records.get("audit").head.tree_size, 8);

  const b = new au.Auditor(n.call, store); // a later visit: a new page load, the same sealed store
  await b.load();
  const second = await b.checkHead();
  assert.equal(second.ok, true);
  assert.deepEqual(second.previous, { tree_size: 8, timestamp_ms: th.older.timestamp_ms });
  assert.deepEqual(n.asked.at(-1), { type: "audit_get_consistency", old_size: 8, new_size: 13 });
  assert.equal(store.records.get("audit").head.tree_size, 13);
});

test("a head signed by another key, a rewritten history and a shorter log each fail, and are not remembered", async () => {
  const forged = { ...head13, root_hash: x(m.roots["12"]) };
  const store = new Store();
  const a = new au.Auditor(node([forged]).call, store);
  await a.load();
  await a.pin(th.public_key);
  assert.equal((await a.checkHead()).problem, "bad_signature");
  assert.equal(store.records.get("audit").head, null);

  // The browser saw size 8 with another root than the log now proves: history was rewritten.
  store.records.get("audit").head = { tree_size: 8, timestamp_ms: 1, root_hash: m.roots["7"], signature: "00" };
  const b = new au.Auditor(node([head13]).call, store);
  await b.load();
  const r = await b.checkHead();
  assert.equal(r.problem, "inconsistent");
  assert.equal(r.previous.tree_size, 8);
  assert.equal(store.records.get("audit").head.root_hash, m.roots["7"]);
  assert.equal(b.head, null);

  // The browser saw 13 leaves, the node now signs 8.
  store.records.get("audit").head = { tree_size: 13, timestamp_ms: 1, root_hash: th.root_hash, signature: th.signature };
  const c2 = new au.Auditor(node([head8]).call, store);
  await c2.load();
  assert.equal((await c2.checkHead()).problem, "shrunk");
});

test("events shown are checked as shown: an altered entry fails, an unsequenced one waits", async () => {
  const store = new Store();
  const n = node([head13]);
  const a = new au.Auditor(n.call, store);
  await a.load();
  await a.pin(th.public_key);
  assert.equal((await a.checkHead()).ok, true);
  for (const i of [0, 6, 12]) assert.deepEqual(await a.checkEvent(event(i)), { state: "verified", treeSize: 13 });
  // The node serves the original entry and leaf hash in the proof reply; the row shown was altered.
  const altered = event(6, m.entries[6].replace("ทดสอบ", "ทดสอบ!"));
  assert.deepEqual(await a.checkEvent(altered), { state: "failed", reason: "altered" });
  assert.deepEqual(await a.checkEvent({ ...event(6), leafIndex: null }), { state: "pending" });
  assert.deepEqual(await a.checkEvent({ ...event(6), leafIndex: 13 }), { state: "pending" });
  // The shown event at another position than its proof's does not verify either.
  assert.deepEqual(await a.checkEvent({ ...event(6), leafIndex: 0 }), { state: "failed", reason: "altered" });
});

test("a signed head inside a proof reply is checked too: forged or of another root, the event fails", async () => {
  const store = new Store();
  const n = node([head13]);
  const a = new au.Auditor(async (f) => {
    const r = await n.call(f);
    if (f.type === "audit_get_inclusion") r.head = f.leaf_index === 0 ? { ...head13, signature: x(th.older.signature) } : f.leaf_index === 6 ? head13 : null;
    return r;
  }, store);
  await a.load();
  await a.pin(th.public_key);
  assert.equal((await a.checkHead()).ok, true);
  assert.deepEqual(await a.checkEvent(event(0)), { state: "failed", reason: "bad_head" });
  assert.deepEqual(await a.checkEvent(event(6)), { state: "verified", treeSize: 13 });
  assert.deepEqual(await a.checkEvent(event(12)), { state: "verified", treeSize: 13 });
});

test("events per hour by kind family", () => {
  const e = (kind, time) => ({ id: 1, leafIndex: 0, kind, time, entry: "{}", fields: {} });
  const h = 3_600_000;
  const { hours, series } = au.perHour([e("message.accepted", 10 * h + 5), e("message.delivered", 10 * h + 9), e("auth.succeeded", 12 * h)]);
  assert.deepEqual(hours, [36000, 39600, 43200]);
  assert.deepEqual(series.get("message"), [2, 0, 0]);
  assert.deepEqual(series.get("auth"), [0, 0, 1]);
  assert.deepEqual(au.officialsOf({ fields: { actor_official: "a", subject_official: "b", details: { queried_officials: ["c"], sender_official: "d", other: "e" } } }), ["a", "b", "c", "d"]);
});
