/** The directory-administration frames (PROTOCOL.md "Directory administration"), typed for the views. */
import type { Device } from "../../client";
import { ServerError, type Frame } from "../../net/wire";
import type { AT } from "./strings";

export interface Agency { id: string; parent_id: string | null; code: string; name_th: string | null; name_en: string | null; depth: number }
export interface Role { role: string; scope_agency_id: string | null }
export interface Official {
  id: string; agency_id: string; agency_code: string; name_th: string | null; name_en: string | null;
  position: string | null; email: string | null; phone: string | null; employee_id: string | null;
  status: "active" | "suspended" | "retired"; roles: Role[];
}

export async function listAgencies(device: Device): Promise<Agency[]> {
  return (await device.call({ type: "list_agencies" }))["agencies"] as Agency[];
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

export type { Frame };
