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

export async function listAgencies(device: Device): Promise<Agency[]> {
  return (await device.call({ type: "list_agencies" }))["agencies"] as Agency[];
}

export interface OfficialsQuery { agency: string | null; status: Status | null; query?: string; after: string | null; limit: number }

/**
 * One page of a subtree's officials (the caller's scope when `agency` is
 * null) by name, searched on the node when `query` has words; `next` is the
 * cursor of the page after (null: no more). Keyset pages: each costs the
 * node the same wherever it is in the directory.
 */
export async function officialsPage(device: Device, q: OfficialsQuery): Promise<{ officials: Official[]; next: string | null }> {
  const reply = await device.call({ type: "list_officials", agency_id: q.agency, status: q.status, query: q.query ?? "", after: q.after, limit: q.limit });
  return { officials: reply["officials"] as Official[], next: (reply["next_after"] as string | null | undefined) ?? null };
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
