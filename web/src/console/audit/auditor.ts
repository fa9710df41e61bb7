/**
 * The auditor's console, minus the screens: queries, names, export, and the
 * checks that let an auditor trust what is shown (docs/AUDIT.md, PROTOCOL.md
 * "Audit operations").
 *
 * Nothing here believes the node's word. The audit public key is pinned in
 * the sealed store, typed in by the auditor from what the node's host
 * prints (`gchat audit public-key`), never taken from the node. Every
 * signed tree head must verify with it; at every visit the new head must be
 * consistent with the last head this browser saw (kept sealed); and every
 * event shown is checked: its entry, as shown, must hash to a leaf whose
 * inclusion proof leads to the verified head's root. A failure says which
 * check, which event (id, leaf index, kind, time) and what it means.
 */
import { equal, fromHex, hex, utf8 } from "../../crypto/bytes";
import { auditKeyId, leafHash, verifyConsistency, verifyInclusion, verifyTreeHead, type TreeHead } from "../../crypto/merkle";
import { ServerError, type Frame } from "../../net/wire";
import type { Vault } from "../../store/vault";

/** Requests to the node as the signed-in device (`Device.call`). */
export type Call = (frame: Frame) => Promise<Frame>;

export interface AuditEvent {
  id: number;
  leafIndex: number | null;
  kind: string;
  time: number;
  /** The entry's exact canonical JSON text: its UTF-8 bytes are the leaf data. */
  entry: string;
  fields: EntryFields;
}

/** The entry's fields the console shows (docs/AUDIT.md §1). */
export interface EntryFields {
  actor_official?: string;
  actor_device?: string;
  subject_official?: string;
  subject_device?: string;
  agency?: string;
  details?: Record<string, unknown>;
}

export interface Filter {
  official?: string;
  device?: string;
  agency?: string;
  kinds?: string[];
  since?: number;
  until?: number;
}

/** What the browser found, per event. */
export type EventCheck =
  | { state: "verified"; treeSize: number }
  | { state: "pending" } // not in the verified head yet (sequenced after it, or not yet)
  | { state: "failed"; reason: "altered" | "no_proof" | "bad_head" };

export type HeadProblem =
  | "no_key" // nothing pinned yet
  | "bad_signature" // the node's head does not verify with the pinned key
  | "inconsistent" // the log is not an extension of the head seen last time
  | "shrunk" // the log is smaller than the head seen last time
  | "no_head"; // the node has signed no head yet

export interface HeadCheck {
  ok: boolean;
  problem?: HeadProblem;
  head?: TreeHead;
  /** The head this browser had seen before (size and time), when there was one. */
  previous?: { tree_size: number; timestamp_ms: number };
}

interface SavedHead { tree_size: number; timestamp_ms: number; root_hash: string; signature: string }
interface AuditRecord { key: string; head: SavedHead | null }

const RECORD = "audit";
const HEX_KEY = /^[0-9a-fA-F]{64}$/;

export class BadAuditKey extends Error {}

/** The key id as `gchat audit public-key` prints it: 16 hex digits in groups of four. */
export const keyFingerprint = (key: Uint8Array): string => hex(auditKeyId(key)).replace(/(.{4})(?!$)/g, "$1 ");

export class Auditor {
  private record: AuditRecord | null = null;
  private verified: TreeHead | null = null;
  private readonly officials = new Map<string, { name: string; agency: string } | null>();
  private readonly devices = new Map<string, string>();
  private agencies: Map<string, { code: string; name: string }> | null = null;

  constructor(private readonly call: Call, private readonly vault: Vault) {}

  async load(): Promise<void> {
    this.record = (await this.vault.get<AuditRecord>(RECORD)) ?? null;
  }

  get pinnedKey(): Uint8Array | null {
    return this.record === null ? null : fromHex(this.record.key);
  }

  /** The tree head verified at this visit (null before `checkHead` passed). */
  get head(): TreeHead | null {
    return this.verified;
  }

  /**
   * Pin the audit public key (64 hex digits, as `gchat audit public-key`
   * prints it). Changing it forgets the last head seen: a new key starts a
   * new chain of trust, which is why the console asks before doing it.
   */
  async pin(keyHex: string): Promise<void> {
    const text = keyHex.trim();
    if (!HEX_KEY.test(text)) throw new BadAuditKey("not 64 hex digits");
    this.record = { key: text.toLowerCase(), head: this.record?.key === text.toLowerCase() ? this.record.head : null };
    this.verified = null;
    await this.vault.put(RECORD, this.record);
  }

  /**
   * Ask for a fresh signed head; verify its signature with the pinned key and
   * its consistency with the last head this browser saw, then remember it.
   * A head that fails is never remembered (the next visit checks again from
   * the last good one).
   */
  async checkHead(): Promise<HeadCheck> {
    const key = this.pinnedKey;
    if (key === null || this.record === null) return { ok: false, problem: "no_key" };
    let reply: Frame;
    try {
      reply = await this.call({ type: "audit_get_tree_head", fresh: true });
    } catch (e) {
      if (e instanceof ServerError && e.code === "not_found") return { ok: false, problem: "no_head" };
      throw e;
    }
    const head = reply["head"];
    const saved = this.record.head;
    const previous = saved === null ? undefined : { tree_size: saved.tree_size, timestamp_ms: saved.timestamp_ms };
    if (!verifyTreeHead(head, key)) return { ok: false, problem: "bad_signature", ...(previous ? { previous } : {}) };
    if (saved !== null) {
      if (head.tree_size < saved.tree_size) return { ok: false, problem: "shrunk", head, previous: previous! };
      let proof: Uint8Array[] = [];
      if (head.tree_size !== saved.tree_size) {
        const c = await this.call({ type: "audit_get_consistency", old_size: saved.tree_size, new_size: head.tree_size });
        proof = (c["proof"] as Uint8Array[] | undefined) ?? [];
        const old = { tree_size: saved.tree_size, root_hash: fromHex(saved.root_hash) };
        if (!this.sameHead(c["old_head"], old) || !this.sameHead(c["new_head"], head)) return { ok: false, problem: "bad_signature", head, previous: previous! };
      }
      if (!verifyConsistency(saved.tree_size, head.tree_size, fromHex(saved.root_hash), head.root_hash, proof)) {
        return { ok: false, problem: "inconsistent", head, previous: previous! };
      }
    }
    this.verified = head;
    this.record.head = { tree_size: head.tree_size, timestamp_ms: head.timestamp_ms, root_hash: hex(head.root_hash), signature: hex(head.signature) };
    await this.vault.put(RECORD, this.record);
    return { ok: true, head, ...(previous ? { previous } : {}) };
  }

  /** A head a reply carries (null: none signed at that size) must verify and match `expected` when it has its size. */
  private sameHead(given: unknown, expected: { tree_size: number; root_hash: Uint8Array }): boolean {
    if (given === null || given === undefined) return true;
    const key = this.pinnedKey;
    if (key === null || !verifyTreeHead(given, key)) return false;
    return given.tree_size !== expected.tree_size || equal(given.root_hash, expected.root_hash);
  }

  /** One page of events (`after`: the cursor of the previous page). */
  async query(filter: Filter, after = 0, limit = 50): Promise<{ events: AuditEvent[]; next: number | null }> {
    const reply = await this.call({
      type: "audit_query", official_id: filter.official ?? null, device_id: filter.device ?? null,
      agency_id: filter.agency ?? null, kinds: filter.kinds ?? [], since: filter.since ?? null,
      until: filter.until ?? null, after, limit,
    });
    return { events: toEvents(reply), next: (reply["next_after"] as number | null) ?? null };
  }

  /**
   * Access transparency, for any official: the auditors' requests about me.
   * The auditors are named from the reply's `auditors` (the node's directory
   * records: an official may not read another's), the same trust as every
   * name the console shows (docs/THREAT_MODEL.md).
   */
  async accesses(lang: "th" | "en", after = 0, limit = 100): Promise<{ events: AuditEvent[]; next: number | null }> {
    const reply = await this.call({ type: "audit_list_accesses", after, limit });
    for (const a of (reply["auditors"] as Frame[] | undefined) ?? []) {
      const name = String((lang === "en" ? a["name_en"] ?? a["name_th"] : a["name_th"] ?? a["name_en"]) ?? "");
      this.officials.set(String(a["official_id"]), { name, agency: String(a["agency_code"] ?? "") });
    }
    return { events: toEvents(reply), next: (reply["next_after"] as number | null) ?? null };
  }

  /**
   * Check one event shown against the verified head: the entry as shown must
   * hash to the leaf that the node's inclusion proof leads from to the
   * head's root. The node's own `entry` and `leaf_hash` in the reply are not
   * used: only the proof's sibling hashes, which cannot make a changed
   * entry reach the signed root.
   */
  async checkEvent(event: AuditEvent): Promise<EventCheck> {
    const head = this.verified;
    if (head === null || event.leafIndex === null || event.leafIndex >= head.tree_size) return { state: "pending" };
    let proof: Uint8Array[];
    try {
      const r = await this.call({ type: "audit_get_inclusion", leaf_index: event.leafIndex, tree_size: head.tree_size });
      proof = (r["proof"] as Uint8Array[] | undefined) ?? [];
      // Every signed head the node gives is checked, this one too: it must be the verified head.
      if (!this.sameHead(r["head"], head)) return { state: "failed", reason: "bad_head" };
    } catch (e) {
      if (e instanceof ServerError) return { state: "failed", reason: "no_proof" };
      throw e;
    }
    const ok = verifyInclusion(leafHash(utf8(event.entry)), event.leafIndex, head.tree_size, proof, head.root_hash);
    return ok ? { state: "verified", treeSize: head.tree_size } : { state: "failed", reason: "altered" };
  }

  /**
   * Export leaves [start, end) with proofs, as `gchat audit export` writes
   * it (JSON Lines, `gchat-audit-export/1`), for `gchat audit verify`.
   */
  async exportRange(start: number, end: number | null, onPage?: (lines: number) => void): Promise<string[]> {
    const lines: string[] = [];
    let cursor: number | null = null;
    let treeSize: number | null = null;
    do {
      const page: Frame = await this.call({ type: "audit_export", start, end, tree_size: treeSize, cursor });
      lines.push(...(page["lines"] as string[]));
      treeSize = page["tree_size"] as number;
      cursor = (page["cursor"] as number | null) ?? null;
      onPage?.(lines.length);
    } while (cursor !== null);
    return lines;
  }

  // --- names ------------------------------------------------------------------------

  /** Agencies this auditor may list: id -> code and name (empty when not allowed). */
  async agencyList(lang: "th" | "en"): Promise<Map<string, { code: string; name: string }>> {
    if (this.agencies === null) {
      this.agencies = new Map();
      try {
        const r = await this.call({ type: "list_agencies" });
        for (const a of r["agencies"] as Frame[]) {
          const name = String((lang === "en" ? a["name_en"] ?? a["name_th"] : a["name_th"] ?? a["name_en"]) ?? "");
          this.agencies.set(String(a["id"]), { code: String(a["code"]), name });
        }
      } catch (e) {
        if (!(e instanceof ServerError)) throw e;
      }
    }
    return this.agencies;
  }

  /** Names of these officials and of their devices (null: not ours to read), fetched once each. */
  async resolve(ids: Iterable<string>, lang: "th" | "en"): Promise<void> {
    const wanted = [...new Set(ids)].filter((id) => !this.officials.has(id));
    await Promise.all(wanted.map(async (id) => {
      try {
        const r = await this.call({ type: "get_official", official_id: id });
        const o = r["official"] as Frame;
        const name = String((lang === "en" ? o["name_en"] ?? o["name_th"] : o["name_th"] ?? o["name_en"]) ?? "");
        this.officials.set(id, { name, agency: String(o["agency_code"] ?? "") });
        for (const d of await this.devicesOf(id)) this.devices.set(String(d["device_id"]), `${String(d["name"])} (${String(d["platform"])})`);
      } catch (e) {
        if (!(e instanceof ServerError)) throw e;
        this.officials.set(id, null);
      }
    }));
  }

  /** A device's name and platform, when its official's devices were readable. */
  deviceName(id: string | undefined): string | null {
    return id === undefined ? null : this.devices.get(id) ?? null;
  }

  /** Officials by name, to filter on (the directory search every official may use). */
  async findOfficials(query: string): Promise<Frame[]> {
    if (query.trim() === "") return [];
    const r = await this.call({ type: "search_officials", query: query.trim(), limit: 20 });
    return r["results"] as Frame[];
  }

  /** An official's devices (name, platform), to filter on; empty when not ours to read. */
  async devicesOf(official: string): Promise<Frame[]> {
    try {
      const r = await this.call({ type: "list_devices", official_id: official });
      return r["devices"] as Frame[];
    } catch (e) {
      if (e instanceof ServerError) return [];
      throw e;
    }
  }

  official(id: string | undefined): { name: string; agency: string } | null {
    return id === undefined ? null : this.officials.get(id) ?? null;
  }
}

function toEvents(reply: Frame): AuditEvent[] {
  return (reply["events"] as Frame[]).map((e) => {
    const entry = String(e["entry"]);
    let fields: EntryFields = {};
    try {
      fields = JSON.parse(entry) as EntryFields;
    } catch {
      fields = {};
    }
    return { id: Number(e["id"]), leafIndex: (e["leaf_index"] as number | null) ?? null, kind: String(e["kind"]), time: Number(e["time"]), entry, fields };
  });
}

/** Officials named by an event (actor, subject, and ids under `*_official(s)` in details). */
export function officialsOf(e: AuditEvent): string[] {
  const out: string[] = [];
  if (e.fields.actor_official) out.push(e.fields.actor_official);
  if (e.fields.subject_official) out.push(e.fields.subject_official);
  for (const [k, v] of Object.entries(e.fields.details ?? {})) {
    if (k.endsWith("_official") && typeof v === "string") out.push(v);
    if (k.endsWith("_officials") && Array.isArray(v)) for (const x of v) if (typeof x === "string") out.push(x);
  }
  return out;
}

/** Events per hour by kind family (`message`, `auth`, ...), for the chart: hour starts (s) and one series per family. */
export function perHour(events: AuditEvent[]): { hours: number[]; series: Map<string, number[]> } {
  if (events.length === 0) return { hours: [], series: new Map() };
  const hour = (ms: number): number => Math.floor(ms / 3_600_000);
  const first = Math.min(...events.map((e) => hour(e.time)));
  const last = Math.max(...events.map((e) => hour(e.time)));
  const hours = Array.from({ length: last - first + 1 }, (_, i) => (first + i) * 3600);
  const series = new Map<string, number[]>();
  for (const e of events) {
    const family = e.kind.split(".")[0] ?? e.kind;
    let counts = series.get(family);
    if (counts === undefined) {
      counts = hours.map(() => 0);
      series.set(family, counts);
    }
    counts[hour(e.time) - first]! += 1;
  }
  return { hours, series };
}
/** Event kinds the node records (docs/AUDIT.md); tests/web/test_audit_kinds.py checks this list equals the Python client's. */
export const KINDS: readonly string[] = [
  "admin.agency_created",
  "admin.agency_moved",
  "admin.agency_updated",
  "admin.bootstrap",
  "admin.code_cancelled",
  "admin.code_issued",
  "admin.device_revoked",
  "admin.official_created",
  "admin.official_moved",
  "admin.official_reinstated",
  "admin.official_retired",
  "admin.official_suspended",
  "admin.official_updated",
  "admin.officials_imported",
  "admin.policy_set",
  "admin.role_granted",
  "admin.role_revoked",
  "attachment.fetched",
  "attachment.uploaded",
  "audit.consistency_proof",
  "audit.directory_read",
  "audit.export",
  "audit.inclusion_proof",
  "audit.query",
  "audit.tree_head",
  "auth.failed",
  "auth.succeeded",
  "conversation.admin_demoted",
  "conversation.admin_promoted",
  "conversation.announcement_set",
  "conversation.direct_created",
  "conversation.group_created",
  "conversation.members_added",
  "conversation.members_left",
  "conversation.members_removed",
  "conversation.renamed",
  "device.enrolled",
  "device.enrolment_refused",
  "keys.bundle_fetched",
  "message.accepted",
  "message.delivered",
];
