/** The content map inside pairwise ciphertexts (§E6a, §E7a) and the membership digest. */
import { decode, encode } from "@msgpack/msgpack";
import { compareBytes, concat, utf8, uuidBytes } from "./bytes";
import { InvalidMessage } from "./errors";
import { sha256 } from "./primitives";

/** `recipient`: set only in copies for our own other devices, naming the official a message went to. */
export interface Content { body: Uint8Array; certificate: Uint8Array; sender_key?: Uint8Array; conversation_id?: string; recipient?: string }
const contentKeys = new Set(["body", "certificate", "sender_key", "conversation_id", "recipient"]);

/** Keys in the order the reference client writes them (body, certificate, sender_key, conversation_id, recipient). */
export function encodeContent(c: Content): Uint8Array {
  const m: Record<string, unknown> = { body: c.body, certificate: c.certificate };
  if (c.sender_key !== undefined) m["sender_key"] = c.sender_key;
  if (c.conversation_id !== undefined) m["conversation_id"] = c.conversation_id;
  if (c.recipient !== undefined) m["recipient"] = c.recipient;
  return encode(m);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Exactly the known keys, with the right types, or InvalidMessage. */
export function decodeContent(raw: Uint8Array): Content {
  let m: unknown;
  try {
    m = decode(raw);
  } catch {
    throw new InvalidMessage("content is not MessagePack");
  }
  if (typeof m !== "object" || m === null || Object.keys(m).some((k) => !contentKeys.has(k))) throw new InvalidMessage("bad content");
  const r = m as Record<string, unknown>;
  if (!(r["body"] instanceof Uint8Array) || !(r["certificate"] instanceof Uint8Array)) throw new InvalidMessage("bad content");
  const sk = r["sender_key"], cid = r["conversation_id"], to = r["recipient"];
  if ((sk !== undefined && sk !== null && !(sk instanceof Uint8Array)) || (cid !== undefined && cid !== null && typeof cid !== "string")) throw new InvalidMessage("bad content");
  if (to !== undefined && to !== null && (typeof to !== "string" || !UUID.test(to))) throw new InvalidMessage("bad content");
  return {
    body: r["body"], certificate: r["certificate"],
    ...(sk instanceof Uint8Array ? { sender_key: sk } : {}),
    ...(typeof cid === "string" ? { conversation_id: cid } : {}),
    ...(typeof to === "string" ? { recipient: to } : {}),
  };
}

export interface Member { official_id: string; agency_id: string; admin: boolean }

export function membersDigest(members: Member[]): Uint8Array {
  const sorted = [...members].sort((a, b) => compareBytes(uuidBytes(a.official_id), uuidBytes(b.official_id)));
  return sha256(concat(utf8("gchat.members.v1"), ...sorted.map((m) => concat(uuidBytes(m.official_id), uuidBytes(m.agency_id), new Uint8Array([m.admin ? 1 : 0])))));
}
