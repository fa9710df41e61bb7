/** The directory-administration frames (PROTOCOL.md "Directory administration"), typed for the views. */
import type { Device } from "../../client";
import { ServerError } from "../../net/wire";
import type { AT } from "./strings";

export interface Agency { id: string; parent_id: string | null; code: string; name_th: string | null; name_en: string | null; depth: number }
export interface Role { role: string; scope_agency_id: string | null }
export type Status = "active" | "suspended" | "retired";
export interface Official {
  id: string; agency_id: string; agency_code: string; name_th: string | null; name_en: string | null;
  position: string | null; email: string | null; phone: string | null; employee_id: string | null;
  status: Status; roles: Role[];
}
export interface DeviceInfo { device_id: string; name: string; platform: string; status: "active" | "revoked"; enrolled_at: number; last_seen_at: number | null; revoked_at: number | null }
export interface CodeInfo { code_id: string; state: "pending" | "used" | "cancelled" | "expired"; created_at: number; expires_at: number; device_id: string | null }
export interface Policy {
  message_scope: "agency" | "ministry" | "all" | null; max_devices: number | null; retention_seconds: number | null;
  max_attachment_bytes?: number | null; attachment_bytes_per_day?: number | null;
}
export interface Issued { official: Official; code: string; expiresAt: number }

/** The most officials the list view fetches (pages of 500); a bigger subtree is narrowed by agency. */
export const LIST_CAP = 20_000;

export async function listAgencies(device: Device): Promise<Agency[]> {
  return (await device.call({ type: "list_agencies" }))["agencies"] as Agency[];
}

/**
 * Every official of a subtree (the caller's scope when `agency` is null),
 * by name, in keyset pages of 500 (`after` = the last page's `next_after`:
 * each page costs the node the same wherever it is in the directory).
 */
export async function allOfficials(device: Device, agency: string | null, status: Status | null, cap = LIST_CAP): Promise<Official[]> {
  const out: Official[] = [];
  let after: string | null = null;
  do {
    const reply = await device.call({ type: "list_officials", agency_id: agency, status, after, limit: 500 });
    out.push(...(reply["officials"] as Official[]));
    after = (reply["next_after"] as string | null | undefined) ?? null;
  } while (after !== null && out.length < cap);
  return out;
}

export async function getOfficial(device: Device, id: string): Promise<Official> {
  return (await device.call({ type: "get_official", official_id: id }))["official"] as Official;
}

/** A new enrolment code for an official: shown once (the node keeps only its hash). */
export async function issueCode(device: Device, official: Official): Promise<Issued> {
  const reply = await device.call({ type: "issue_code", official_id: official.id });
  return { official, code: String(reply["code"]), expiresAt: Number(reply["expires_at"]) };
}

/** One plain sentence for a refused request (never a stack trace). */
export function explain(t: AT, e: unknown): string {
  if (!(e instanceof ServerError)) return t("errGeneric");
  const detail = String(e.frame["message"] ?? "");
  switch (e.code) {
    case "forbidden": return t("errForbidden");
    case "not_found": return t("errNotFound");
    case "invalid_field": return t("errInvalid", { detail });
    case "conflict": return t("errConflict", { detail });
    default: return t("errGeneric");
  }
}

export const agencyName = (a: Pick<Agency, "name_th" | "name_en" | "code">, lang: "th" | "en"): string =>
  (lang === "th" ? a.name_th ?? a.name_en : a.name_en ?? a.name_th) ?? a.code;

export const officialName = (o: Pick<Official, "name_th" | "name_en">, lang: "th" | "en"): string =>
  (lang === "th" ? o.name_th ?? o.name_en : o.name_en ?? o.name_th) ?? "";

/**
 * Whether an official matches what was typed: every word of the query is
 * found in the names, position, employee id, email or agency code, after
 * NFKC (the two ways of typing Thai sara am are one) and case folding. A
 * substring, not a word start, so "สมชาย" finds "นายสมชาย" (Thai titles are
 * written glued to the name).
 */
export function matches(o: Official, query: string): boolean {
  const words = fold(query).split(/\s+/).filter((w) => w !== "");
  if (words.length === 0) return true;
  const hay = fold([o.name_th, o.name_en, o.position, o.employee_id, o.email, o.agency_code].filter((x) => x).join(" "));
  return words.every((w) => hay.includes(w));
}

const fold = (s: string): string => s.normalize("NFKC").toLocaleLowerCase();
