/** The agency tree: create, rename, move (an agency admin sees and changes its own subtree only). */
import { useEffect, useState } from "preact/hooks";
import type { Device } from "../../client";
import type { Lang } from "../../i18n";
import { agencyName, explain, listAgencies, type Agency } from "./api";
import type { AT } from "./strings";

export function Agencies({ t, lang, device }: { t: AT; lang: Lang; device: Device }) {
  const [agencies, setAgencies] = useState<Agency[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const superadmin = device.roles.includes("superadmin"); // only a superadmin makes or moves a ministry (top level)
  const reload = async (): Promise<void> => {
    try { setAgencies(await listAgencies(device)); } catch (e) { setError(explain(t, e)); }
  };
  useEffect(() => { void reload(); }, []);
  const act = async (work: () => Promise<unknown>, done: string): Promise<boolean> => {
    setError(null);
    setNotice(null);
    try {
      await work();
      await reload();
      setNotice(done);
      return true;
    } catch (e) {
      setError(explain(t, e));
      return false;
    }
  };
  if (agencies === null) return <p>{error ?? t("loading")}</p>;
  return (
    <section class="stack" aria-labelledby="agency-tree">
      <h3 id="agency-tree">{t("agencyTree")}</h3>
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {notice !== null ? <p role="status">{notice}</p> : null}
      {agencies.length === 0 ? <p>{t("noAgencies")}</p> : (
        <ul class="tree" data-testid="agency-tree">
          {agencies.map((a) => (
            <li key={a.id} data-depth={Math.min(a.depth, 8)} data-code={a.code}>
              <span class="name"><span class="code">{a.code}</span> {agencyName(a, lang)}</span>
              <button type="button" class="secondary small" aria-label={`${t("rename")}: ${a.code}`} onClick={() => setEditing(editing === a.id ? null : a.id)}>{t("rename")}</button>
              {editing === a.id ? <AgencyEdit t={t} lang={lang} agency={a} agencies={agencies} superadmin={superadmin} onCancel={() => setEditing(null)}
                onSave={async (fields, parent) => {
                  const ok = await act(async () => {
                    await device.call({ type: "update_agency", agency_id: a.id, ...fields });
                    if (parent !== undefined && parent !== a.parent_id) await device.call({ type: "move_agency", agency_id: a.id, parent_id: parent });
                  }, t("saved"));
                  if (ok) setEditing(null);
                }} /> : null}
            </li>
          ))}
        </ul>
      )}
      <NewAgency t={t} lang={lang} agencies={agencies} superadmin={superadmin} onCreate={(fields) => act(() => device.call({ type: "create_agency", ...fields }), t("created"))} />
    </section>
  );
}

type Fields = { code: string; name_th: string | null; name_en: string | null };

function AgencyEdit({ t, lang, agency, agencies, superadmin, onSave, onCancel }: { t: AT; lang: Lang; agency: Agency; agencies: Agency[]; superadmin: boolean; onSave: (f: Fields, parent: string | null | undefined) => Promise<void>; onCancel: () => void }) {
  const [code, setCode] = useState(agency.code);
  const [nameTh, setNameTh] = useState(agency.name_th ?? "");
  const [nameEn, setNameEn] = useState(agency.name_en ?? "");
  const [parent, setParent] = useState(agency.parent_id ?? "");
  const below = subtree(agencies, agency.id);
  return (
    <form class="stack card" onSubmit={(e) => { e.preventDefault(); void onSave({ code, name_th: nameTh, name_en: nameEn }, parent === "" ? null : parent); }}>
      <label>{t("code")}<input type="text" value={code} onInput={(e) => setCode(e.currentTarget.value)} required /></label>
      <label>{t("nameTh")}<input type="text" value={nameTh} onInput={(e) => setNameTh(e.currentTarget.value)} /></label>
      <label>{t("nameEn")}<input type="text" value={nameEn} onInput={(e) => setNameEn(e.currentTarget.value)} /></label>
      <label>{t("moveTo")}
        <select value={parent} onChange={(e) => setParent(e.currentTarget.value)}>
          {superadmin ? <option value="">{t("topLevel")}</option> : null}
          {agencies.filter((x) => !below.has(x.id)).map((x) => <option key={x.id} value={x.id}>{x.code} {agencyName(x, lang)}</option>)}
        </select>
      </label>
      <div class="actions"><button type="submit">{t("save")}</button><button type="button" class="secondary" onClick={onCancel}>{t("cancel")}</button></div>
    </form>
  );
}

function NewAgency({ t, lang, agencies, superadmin, onCreate }: { t: AT; lang: Lang; agencies: Agency[]; superadmin: boolean; onCreate: (f: Fields & { parent_id: string | null }) => Promise<boolean> }) {
  const [code, setCode] = useState("");
  const [nameTh, setNameTh] = useState("");
  const [nameEn, setNameEn] = useState("");
  const [parent, setParent] = useState(agencies[0]?.id ?? "");
  return (
    <form class="stack card" aria-labelledby="new-agency" onSubmit={async (e) => {
      e.preventDefault();
      if (await onCreate({ code, name_th: nameTh || null, name_en: nameEn || null, parent_id: parent === "" ? null : parent })) { setCode(""); setNameTh(""); setNameEn(""); }
    }}>
      <h3 id="new-agency">{t("newAgency")}</h3>
      <label>{t("parent")}
        <select name="parent" value={parent} onChange={(e) => setParent(e.currentTarget.value)}>
          {superadmin ? <option value="">{t("topLevel")}</option> : null}
          {agencies.map((x) => <option key={x.id} value={x.id}>{"\u00a0".repeat(2 * x.depth)}{x.code} {agencyName(x, lang)}</option>)}
        </select>
      </label>
      <label>{t("code")}<input type="text" name="code" value={code} onInput={(e) => setCode(e.currentTarget.value)} required /></label>
      <label>{t("nameTh")}<input type="text" name="name_th" value={nameTh} onInput={(e) => setNameTh(e.currentTarget.value)} /></label>
      <label>{t("nameEn")}<input type="text" name="name_en" value={nameEn} onInput={(e) => setNameEn(e.currentTarget.value)} /></label>
      <button type="submit">{t("create")}</button>
    </form>
  );
}

/** An agency and everything below it (a move there is refused by the node; not offered here). */
function subtree(agencies: Agency[], root: string): Set<string> {
  const out = new Set([root]);
  for (const a of agencies) if (a.parent_id !== null && out.has(a.parent_id)) out.add(a.id); // parents come before children
  return out;
}
