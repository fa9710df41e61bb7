/**
 * The console's entries beside the chats: which views exist and who sees
 * them. An entry is shown only when the official's roles (as the node said
 * at authentication) allow it; the node checks every request again, so
 * hiding is for clarity, never the protection.
 *
 * To add a view: one entry here (a route id, its nav label in i18n.ts, the
 * roles that see it, the component). The auditor's views plug in as the
 * `audit` entry.
 */
import type { FunctionComponent } from "preact";
import type { Device } from "../client";
import type { Key, Lang } from "../i18n";
import { AuditView } from "./audit/view";
import { AdminView } from "./admin/view";

export interface ConsoleProps {
  lang: Lang;
  device: Device;
  /** The route below the entry's id (`#/admin/officials/…` gives `["officials", …]`). */
  path: string[];
}

export interface ConsoleEntry {
  id: string;
  label: Key;
  allowed: (roles: readonly string[]) => boolean;
  View: FunctionComponent<ConsoleProps>;
}

export const isAdmin = (roles: readonly string[]): boolean => roles.includes("superadmin") || roles.includes("agency_admin");
export const isAuditor = (roles: readonly string[]): boolean => roles.includes("auditor");

export const ENTRIES: ConsoleEntry[] = [
  { id: "admin", label: "navAdmin", allowed: isAdmin, View: AdminView },
  { id: "audit", label: "navAudit", allowed: isAuditor, View: AuditView },
];

export const visibleEntries = (roles: readonly string[]): ConsoleEntry[] => ENTRIES.filter((e) => e.allowed(roles));
