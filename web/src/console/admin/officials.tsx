/** Officials: the list with search and selection, adding one, and one official's page. */
import { useEffect, useRef, useState } from "preact/hooks";
import type { Device } from "../../client";
import { formatTime, type Lang } from "../../i18n";
import { go } from "../route";
import {
  agencyName, explain, getOfficial, issueCode, listAgencies, officialName, officialsPage,
  type Agency, type CodeInfo, type DeviceInfo, type Issued, type Official, type Role, type Status,
} from "./api";
import type { AdminKey, AT } from "./strings";

const PAGE = 100; // officials per request; "show more" asks for the next page

interface Props { t: AT; lang: Lang; device: Device; onLetters: (issued: Issued[]) => void }

/**
 * The officials of the admin's scope, searched on the node (`list_officials`
 * with `query`: names in Thai or English, position, agency, exact employee
 * id) and paged with its keyset cursor, so a ministry of 300,000 costs the
 * browser one page at a time.
 */
export function OfficialsList({ t, lang, device, onLetters }: Props) {
  const [agencies, setAgencies] = useState<Agency[]>([]);
  const [agency, setAgency] = useState<string>("");
  const [status, setStatus] = useState<Status | "">("");
  const [query, setQuery] = useState("");
  const [asked, setAsked] = useState("");
  const [officials, setOfficials] = useState<Official[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const latest = useRef(0);
  useEffect(() => { listAgencies(device).then(setAgencies, (e) => setError(explain(t, e))); }, []);
  useEffect(() => { // ask the node once typing pauses
    const timer = setTimeout(() => setAsked(query.trim()), 250);
    return () => clearTimeout(timer);
  }, [query]);
  const load = async (after: string | null): Promise<void> => {
    const ticket = ++latest.current;
    try {
      const page = await officialsPage(device, { agency: agency || null, status: status || null, query: asked, after, limit: PAGE });
      if (ticket !== latest.current) return; // a newer search was asked meanwhile
      setOfficials((before) => (after === null ? page.officials : [...(before ?? []), ...page.officials]));
      setNext(page.next);
      setError(null);
    } catch (e) { if (ticket === latest.current) setError(explain(t, e)); }
  };
  useEffect(() => { setOfficials(null); setNext(null); void load(null); }, [agency, status, asked]);
  const shown = officials ?? [];
  const toggle = (id: string): void => {
    const nextSet = new Set(selected);
    if (nextSet.has(id)) nextSet.delete(id); else nextSet.add(id);
    setSelected(nextSet);
  };
  return (
    <section class="stack" aria-labelledby="officials-h">
      <h3 id="officials-h">{t("officials")}</h3>
      <div class="actions">
        <a class="button" href="#/admin/officials/new" onClick={(e) => { e.preventDefault(); go(["admin", "officials", "new"]); }}>{t("addOfficial")}</a>
        <button type="button" class="secondary" disabled={selected.size === 0 || busy} onClick={async () => {
          setBusy(true);
          setError(null);
          try {
            const chosen = shown.filter((o) => selected.has(o.id) && o.status === "active");
            const issued: Issued[] = [];
            for (const o of chosen) issued.push(await issueCode(device, o));
            onLetters(issued);
          } catch (e) { setError(explain(t, e)); } finally { setBusy(false); }
        }}>{t("printSelected", { n: selected.size })}</button>
      </div>
      <div class="filters">
        <label class="grow">{t("searchOfficials")}<input type="search" name="q" value={query} onInput={(e) => setQuery(e.currentTarget.value)} /></label>
        <label>{t("agency")}<AgencySelect t={t} lang={lang} agencies={agencies} value={agency} onChange={setAgency} empty={t("allAgencies")} /></label>
        <label>{t("status")}
          <select value={status} onChange={(e) => setStatus(e.currentTarget.value as Status | "")}>
            <option value="">{t("anyStatus")}</option>
            {(["active", "suspended", "retired"] as const).map((s) => <option key={s} value={s}>{t(s)}</option>)}
          </select>
        </label>
      </div>
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {officials === null ? <p>{t("loading")}</p> : shown.length === 0 ? <p>{t("noOfficials")}</p> : (
        <>
          <p class="status" role="status" data-testid="officials-count">{t(next === null ? "shownAll" : "shownSome", { n: shown.length })}</p>
          <table class="grid" data-testid="officials">
            <thead><tr>
              <th><input type="checkbox" aria-label={t("selectAll")} checked={shown.every((o) => selected.has(o.id))} onChange={(e) => setSelected(e.currentTarget.checked ? new Set([...selected, ...shown.map((o) => o.id)]) : new Set())} /></th>
              <th>{t("name")}</th><th>{t("position")}</th><th>{t("agency")}</th><th>{t("employeeId")}</th><th>{t("status")}</th><th>{t("roles")}</th>
            </tr></thead>
            <tbody>
              {shown.map((o) => (
                <tr key={o.id} data-status={o.status}>
                  <td><input type="checkbox" aria-label={`${t("select")}: ${officialName(o, lang)}`} checked={selected.has(o.id)} onChange={() => toggle(o.id)} /></td>
                  <td><a href={`#/admin/officials/${o.id}`}>{officialName(o, lang)}</a>{o.name_th && o.name_en ? <span class="sub">{lang === "th" ? o.name_en : o.name_th}</span> : null}</td>
                  <td>{o.position ?? ""}</td>
                  <td>{o.agency_code}</td>
                  <td>{o.employee_id ?? ""}</td>
                  <td>{t(o.status)}</td>
                  <td>{rolesText(t, o.roles, agencies)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {next !== null ? <button type="button" class="secondary" onClick={() => void load(next)}>{t("showMore")}</button> : null}
        </>
      )}
    </section>
  );
}

export function rolesText(t: AT, roles: Role[], agencies: Agency[]): string {
  const codes = new Map(agencies.map((a) => [a.id, a.code]));
  return roles.filter((r) => r.role !== "official")
    .map((r) => t(`role_${r.role}` as AdminKey) + (r.scope_agency_id === null ? "" : ` @${codes.get(r.scope_agency_id) ?? r.scope_agency_id.slice(0, 8)}`))
    .join(", ");
}

export function AgencySelect({ lang, agencies, value, onChange, empty, name }: { t: AT; lang: Lang; agencies: Agency[]; value: string; onChange: (v: string) => void; empty?: string; name?: string }) {
  return (
    <select name={name} value={value} onChange={(e) => onChange(e.currentTarget.value)}>
      {empty !== undefined ? <option value="">{empty}</option> : null}
      {agencies.map((a) => <option key={a.id} value={a.id}>{"\u00a0".repeat(2 * a.depth)}{a.code} {agencyName(a, lang)}</option>)}
    </select>
  );
}

const FIELDS = ["name_th", "name_en", "position", "employee_id", "email", "phone"] as const;
type FieldName = (typeof FIELDS)[number];
const LABEL: Record<FieldName, AdminKey> = { name_th: "nameTh", name_en: "nameEn", position: "position", employee_id: "employeeId", email: "email", phone: "phone" };
const INPUT: Record<FieldName, "text" | "email" | "tel"> = { name_th: "text", name_en: "text", position: "text", employee_id: "text", email: "email", phone: "tel" };

function FieldInputs({ t, values, onChange }: { t: AT; values: Record<FieldName, string>; onChange: (k: FieldName, v: string) => void }) {
  return <>{FIELDS.map((k) => <label key={k}>{t(LABEL[k])}<input type="text" inputMode={INPUT[k]} name={k} value={values[k]} onInput={(e) => onChange(k, e.currentTarget.value)} /></label>)}</>;
}

const emptyFields = (): Record<FieldName, string> => ({ name_th: "", name_en: "", position: "", employee_id: "", email: "", phone: "" });

export function NewOfficial({ t, lang, device }: { t: AT; lang: Lang; device: Device }) {
  const [agencies, setAgencies] = useState<Agency[]>([]);
  const [agency, setAgency] = useState("");
  const [values, setValues] = useState(emptyFields);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => { listAgencies(device).then((a) => { setAgencies(a); setAgency(a[0]?.id ?? ""); }, (e) => setError(explain(t, e))); }, []);
  return (
    <section class="stack">
      <a href="#/admin/officials">{t("back")}</a>
      <form class="stack card" aria-labelledby="new-official" onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        const given = Object.fromEntries(FIELDS.filter((k) => values[k].trim() !== "").map((k) => [k, values[k].trim()]));
        try {
          const reply = await device.call({ type: "create_official", name: values.name_th.trim() || values.name_en.trim(), agency_id: agency || null, ...given });
          go(["admin", "officials", String(reply["official_id"])]);
        } catch (err) { setError(explain(t, err)); }
      }}>
        <h3 id="new-official">{t("addOfficial")}</h3>
        <label>{t("agency")}<AgencySelect t={t} lang={lang} agencies={agencies} value={agency} onChange={setAgency} name="agency" /></label>
        <FieldInputs t={t} values={values} onChange={(k, v) => setValues({ ...values, [k]: v })} />
        {error !== null ? <p role="alert" class="error">{error}</p> : null}
        <button type="submit">{t("create")}</button>
      </form>
    </section>
  );
}

export function OfficialPage({ t, lang, device, id, onLetters }: Props & { id: string }) {
  const [official, setOfficial] = useState<Official | null>(null);
  const [agencies, setAgencies] = useState<Agency[]>([]);
  const [devices, setDevices] = useState<DeviceInfo[]>([]);
  const [codes, setCodes] = useState<CodeInfo[]>([]);
  const [values, setValues] = useState(emptyFields);
  const [moveTo, setMoveTo] = useState("");
  const [confirmRetire, setConfirmRetire] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const load = async (): Promise<void> => {
    const o = await getOfficial(device, id);
    setOfficial(o);
    setValues(Object.fromEntries(FIELDS.map((k) => [k, o[k] ?? ""])) as Record<FieldName, string>);
    setMoveTo(o.agency_id);
    setDevices((await device.call({ type: "list_devices", official_id: id }))["devices"] as DeviceInfo[]);
    setCodes((await device.call({ type: "list_codes", official_id: id }))["codes"] as CodeInfo[]);
  };
  useEffect(() => {
    load().catch((e) => setError(explain(t, e)));
    listAgencies(device).then(setAgencies, () => undefined);
  }, [id]);
  const act = async (work: () => Promise<unknown>): Promise<void> => {
    setError(null);
    setNotice(null);
    try { await work(); await load(); setNotice(t("saved")); } catch (e) { setError(explain(t, e)); }
  };
  if (official === null) return <section><a href="#/admin/officials">{t("back")}</a>{error !== null ? <p role="alert" class="error">{error}</p> : <p>{t("loading")}</p>}</section>;
  const name = officialName(official, lang);
  const when = (ms: number | null): string => (ms === null ? t("never") : formatTime(lang, ms));
  return (
    <section class="stack" data-testid="official-page">
      <a href="#/admin/officials">{t("back")}</a>
      <h3>{name} <span class="pill" data-status={official.status}>{t(official.status)}</span></h3>
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {notice !== null ? <p role="status">{notice}</p> : null}
      <form class="stack card" aria-label={t("details")} onSubmit={(e) => {
        e.preventDefault();
        void act(() => device.call({ type: "update_official", official_id: id, ...Object.fromEntries(FIELDS.map((k) => [k, values[k].trim()])) }));
      }}>
        <FieldInputs t={t} values={values} onChange={(k, v) => setValues({ ...values, [k]: v })} />
        <button type="submit" disabled={official.status === "retired"}>{t("save")}</button>
      </form>
      <form class="actions card" onSubmit={(e) => { e.preventDefault(); void act(() => device.call({ type: "move_official", official_id: id, agency_id: moveTo })); }}>
        <label class="grow">{t("move")}<AgencySelect t={t} lang={lang} agencies={agencies} value={moveTo} onChange={setMoveTo} name="move" /></label>
        <button type="submit" disabled={moveTo === official.agency_id || official.status === "retired"}>{t("move")}</button>
      </form>
      <div class="actions">
        {official.status === "active" ? <button type="button" class="secondary" onClick={() => act(() => device.call({ type: "set_official_status", official_id: id, status: "suspended" }))}>{t("suspend")}</button> : null}
        {official.status === "suspended" ? <button type="button" class="secondary" onClick={() => act(() => device.call({ type: "set_official_status", official_id: id, status: "active" }))}>{t("reinstate")}</button> : null}
        {official.status !== "retired" ? <button type="button" class="danger" onClick={() => setConfirmRetire(true)}>{t("retire")}</button> : null}
        {official.status === "active" ? <button type="button" onClick={async () => { try { onLetters([await issueCode(device, official)]); } catch (e) { setError(explain(t, e)); } }}>{t("issueCode")}</button> : null}
      </div>
      {confirmRetire ? (
        <div role="alertdialog" aria-labelledby="retire-q" class="banner danger-zone">
          <p id="retire-q">{t("retireConfirm", { name })}</p>
          <div class="actions">
            <button type="button" class="danger" onClick={async () => { setConfirmRetire(false); await act(() => device.call({ type: "set_official_status", official_id: id, status: "retired" })); }}>{t("retireYes", { name })}</button>
            <button type="button" class="secondary" onClick={() => setConfirmRetire(false)}>{t("cancel")}</button>
          </div>
        </div>
      ) : null}
      <Roles t={t} lang={lang} official={official} agencies={agencies} superadmin={device.roles.includes("superadmin")} onGrant={(role, scope) => act(() => device.call({ type: "grant_role", official_id: id, role, scope_agency_id: scope }))}
        onRevoke={(role) => act(() => device.call({ type: "revoke_role", official_id: id, role }))} />
      <h4>{t("devices")}</h4>
      {devices.length === 0 ? <p>{t("noDevices")}</p> : (
        <table class="grid" data-testid="devices">
          <thead><tr><th>{t("name")}</th><th>{t("platform")}</th><th>{t("status")}</th><th>{t("enrolledAt")}</th><th>{t("lastSeen")}</th><th /></tr></thead>
          <tbody>{devices.map((d) => (
            <tr key={d.device_id}>
              <td>{d.name}</td><td>{d.platform}</td><td>{t(d.status === "active" ? "deviceActive" : "deviceRevoked")}</td>
              <td>{when(d.enrolled_at)}</td><td>{when(d.last_seen_at)}</td>
              <td>{d.status === "active" ? <button type="button" class="secondary small" aria-label={`${t("revoke")}: ${d.name}`} onClick={() => { if (confirm(t("revokeDeviceConfirm", { device: d.name, name }))) void act(() => device.call({ type: "revoke_device", device_id: d.device_id })); }}>{t("revoke")}</button> : null}</td>
            </tr>
          ))}</tbody>
        </table>
      )}
      <h4>{t("codes")}</h4>
      {codes.length === 0 ? <p>{t("noCodes")}</p> : (
        <table class="grid" data-testid="codes">
          <thead><tr><th>{t("status")}</th><th>{t("createdAt")}</th><th>{t("expiresAt")}</th><th /></tr></thead>
          <tbody>{codes.map((c) => (
            <tr key={c.code_id} data-state={c.state}>
              <td>{t(`code_${c.state}` as AdminKey)}</td><td>{when(c.created_at)}</td><td>{when(c.expires_at)}</td>
              <td>{c.state === "pending" ? <button type="button" class="secondary small" onClick={() => { if (confirm(t("cancelCodeConfirm", { at: when(c.created_at) }))) void act(() => device.call({ type: "cancel_code", code_id: c.code_id })); }}>{t("cancelCode")}</button> : null}</td>
            </tr>
          ))}</tbody>
        </table>
      )}
    </section>
  );
}

/** Roles an admin may grant: a superadmin any, with any scope; an agency admin scoped ones inside its subtree (the node's rule). */
function Roles({ t, lang, official, agencies, superadmin, onGrant, onRevoke }: { t: AT; lang: Lang; official: Official; agencies: Agency[]; superadmin: boolean; onGrant: (role: string, scope: string | null) => Promise<void>; onRevoke: (role: string) => Promise<void> }) {
  const grantable = superadmin ? ["agency_admin", "auditor", "superadmin"] as const : ["agency_admin", "auditor"] as const;
  const [role, setRole] = useState<string>("agency_admin");
  const [scope, setScope] = useState<string>(official.agency_id);
  const codes = new Map(agencies.map((a) => [a.id, a]));
  return (
    <section class="stack card" aria-labelledby="roles-h">
      <h4 id="roles-h">{t("roles")}</h4>
      <ul class="plain" data-testid="roles">
        {official.roles.map((r) => (
          <li key={r.role}>
            {t(`role_${r.role}` as AdminKey)}{r.role === "official" || r.role === "superadmin" ? "" : ` · ${t("scope")}: ${r.scope_agency_id === null ? t("everywhere") : (codes.get(r.scope_agency_id)?.code ?? r.scope_agency_id)}`}
            {r.role !== "official" ? <button type="button" class="secondary small" onClick={() => onRevoke(r.role)}>{t("revoke")}</button> : null}
          </li>
        ))}
      </ul>
      <form class="actions" onSubmit={(e) => { e.preventDefault(); void onGrant(role, role === "superadmin" || scope === "" ? null : scope); }}>
        <label>{t("roles")}<select name="role" value={role} onChange={(e) => setRole(e.currentTarget.value)}>{grantable.map((r) => <option key={r} value={r}>{t(`role_${r}`)}</option>)}</select></label>
        {role !== "superadmin" ? <label>{t("scope")}<AgencySelect t={t} lang={lang} agencies={agencies} value={scope} onChange={setScope} {...(superadmin ? { empty: t("everywhere") } : {})} name="scope" /></label> : null}
        <button type="submit" disabled={official.status !== "active"}>{t("grant")}</button>
      </form>
    </section>
  );
}
