/**
 * The audit log's Merkle tree checks, in the browser (docs/AUDIT.md §2,
 * RFC 9162 §2.1): leaf and node hashes, inclusion and consistency proof
 * verification, and the signed tree head's Ed25519 signature. The auditor's
 * console believes what these functions verified, never the server's word;
 * they are the twins of gchat/audit/merkle.py's verifiers and are tested
 * against its known answers (web/tools/make_vectors.py).
 *
 * The verifiers never throw: their inputs come from the network, so
 * anything malformed is simply "does not verify" (false).
 */
import { concat, u64be, utf8 } from "./bytes";
import { sha256, verify } from "./primitives";

export const HASH_SIZE = 32;
/** Domain separation of the signed tree head message. */
export const TREE_HEAD_DOMAIN = "gchat.treehead.v1";
/** No real proof is longer: two hashes per level of a 2^64-leaf tree. */
const MAX_PROOF = 128;
const MAX_SIZE = Number.MAX_SAFE_INTEGER;

/** SHA-256(0x00 || entry): the RFC 9162 hash of one log entry. */
export const leafHash = (entry: Uint8Array): Uint8Array => sha256(concat(new Uint8Array([0]), entry));

/** SHA-256(0x01 || left || right): the hash of an interior node. */
export const nodeHash = (left: Uint8Array, right: Uint8Array): Uint8Array =>
  sha256(concat(new Uint8Array([1]), left, right));

/** MTH({}) = SHA-256 of the empty string. */
export const emptyRoot = (): Uint8Array => sha256(new Uint8Array(0));

const isSize = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= MAX_SIZE;
const isHash = (h: unknown): h is Uint8Array => h instanceof Uint8Array && h.length === HASH_SIZE;
const isProof = (p: unknown): p is Uint8Array[] => Array.isArray(p) && p.length <= MAX_PROOF && p.every(isHash);

/** Equality of two hashes without an early exit (they are public, but cheap to do right). */
function sameHash(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/*
 * Sizes and indexes go up to 2^53 here (JavaScript numbers); the bit
 * operations of the RFC algorithms are done with division by two, since
 * `>>` would cut them to 32 bits.
 */
const odd = (n: number): boolean => n % 2 === 1;
const half = (n: number): number => Math.floor(n / 2);
function powerOfTwo(n: number): boolean {
  let m = n;
  while (m > 1 && !odd(m)) m = half(m);
  return m === 1;
}

/**
 * RFC 9162 §2.1.3.2: true only if `proof` shows that `leaf` is leaf number
 * `index` of the tree of `treeSize` leaves whose root is `root`. The size
 * and root must come from one verified signed tree head.
 */
export function verifyInclusion(leaf: Uint8Array, index: number, treeSize: number, proof: Uint8Array[], root: Uint8Array): boolean {
  if (!isSize(index) || !isSize(treeSize) || index >= treeSize) return false;
  if (!isHash(leaf) || !isHash(root) || !isProof(proof)) return false;
  let fn = index;
  let sn = treeSize - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      r = nodeHash(p, r);
      while (fn !== 0 && !odd(fn)) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && sameHash(r, root);
}

/**
 * RFC 9162 §2.1.4.2: true only if `proof` shows that the tree of `oldSize`
 * leaves with root `oldRoot` is a prefix of the tree of `newSize` leaves
 * with root `newRoot` (the log was only appended to). Equal sizes need an
 * empty proof and equal roots; the empty tree is a prefix of every tree.
 */
export function verifyConsistency(oldSize: number, newSize: number, oldRoot: Uint8Array, newRoot: Uint8Array, proof: Uint8Array[]): boolean {
  if (!isSize(oldSize) || !isSize(newSize) || oldSize > newSize) return false;
  if (!isHash(oldRoot) || !isHash(newRoot) || !isProof(proof)) return false;
  const empty = emptyRoot();
  if (newSize === 0 && !sameHash(newRoot, empty)) return false;
  if (oldSize === 0) return proof.length === 0 && sameHash(oldRoot, empty);
  if (oldSize === newSize) return proof.length === 0 && sameHash(oldRoot, newRoot);
  if (proof.length === 0) return false;
  const path = [...proof];
  // A power-of-two old tree is a node of the new one: its root is left out of the proof.
  if (powerOfTwo(oldSize)) path.unshift(oldRoot);
  let fn = oldSize - 1;
  let sn = newSize - 1;
  while (odd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (fn !== 0 && !odd(fn)) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && sameHash(fr, oldRoot) && sameHash(sr, newRoot);
}

/** A tree head as the node sends it (`audit_tree_head`'s `head`, PROTOCOL.md "Audit operations"). */
export interface TreeHead {
  tree_size: number;
  timestamp_ms: number;
  root_hash: Uint8Array;
  signature: Uint8Array;
  key_id: Uint8Array;
}

/** `"gchat.treehead.v1" || u64be(tree_size) || u64be(timestamp_ms) || root_hash` (65 bytes). */
export function treeHeadMessage(treeSize: number, timestampMs: number, root: Uint8Array): Uint8Array {
  return concat(utf8(TREE_HEAD_DOMAIN), u64be(treeSize), u64be(timestampMs), root);
}

/** The audit key's id: the first 8 bytes of SHA-256 of the public key (docs/AUDIT.md §2). */
export const auditKeyId = (publicKey: Uint8Array): Uint8Array => sha256(publicKey).slice(0, 8);

/**
 * True only if `head` is well formed and signed by `publicKey` (the pinned
 * audit key). The `key_id` label is not trusted: the signature decides.
 */
export function verifyTreeHead(head: unknown, publicKey: Uint8Array): head is TreeHead {
  if (typeof head !== "object" || head === null) return false;
  const h = head as Record<string, unknown>;
  if (!isSize(h["tree_size"]) || !isSize(h["timestamp_ms"]) || !isHash(h["root_hash"])) return false;
  const signature = h["signature"];
  if (!(signature instanceof Uint8Array) || publicKey.length !== 32) return false;
  try {
    verify(publicKey, treeHeadMessage(h["tree_size"], h["timestamp_ms"], h["root_hash"]), signature);
    return true;
  } catch {
    return false;
  }
}
