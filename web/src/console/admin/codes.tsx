/**
 * Pending enrolment codes of the admin's scope (`list_pending_codes`), soonest
 * to expire first, paged on the node: who each is for, when it was issued and
 * when it expires; cancel one, or issue a new code and print its letter.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import type { Device } from "../../client";
import { formatTime, type Lang } from "../../i18n";
import { AgencySelect } from "./officials";
import { explain, getOfficial, issueCode, listAgencies, officialName, type Agency, type Issued } from "./api";
import type { AT } from "./strings";

const PAGE = 100;

export interface PendingCode {
  code_id: string; official_id: string; name_th: string | null; name_en: string | null;
  agency_code: string; issued_by: string | null; created_at: number; expires_at: number;
}

export function PendingCodes({ t, lang, device, onLetters }: { t: AT; lang: Lang; device: Device; onLetters: (issued: Issued[]) => void }) {
  const [agencies, setAgencies] = useState<Agency[]>([]);
  const [agency, setAgency] = useState("");
  const [codes, setCodes] = useState<PendingCode[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const latest = useRef(0);
  useEffect(() => { listAgencies(device).then(setAgencies, (e) => setError(explain(t, e))); }, []);
  const load = async (after: string | null): Promise<void> => {
    const ticket = ++latest.current;
    try {
      const reply = await device.call({ type: "list_pending_codes", agency_id: agency || null, after, limit: PAGE });
      if (ticket !== latest.current) return;
      const page = reply["codes"] as PendingCode[];
      setCodes((before) => (after === null ? page : [...(before ?? []), ...page]));
      setNext((reply["next_after"] as string | null | undefined) ?? null);
      setError(null);
    } catch (e) { if (ticket === latest.current) setError(explain(t, e)); }
  };
  useEffect(() => { setCodes(null); void load(null); }, [agency]);
  const when = (ms: number): string => formatTime(lang, ms);
  const act = async (work: () => Promise<unknown>, done: string): Promise<void> => {
    setError(null); setNotice(null);
    try { await work(); setNotice(done); await load(null); } catch (e) { setError(explain(t, e)); }
  };
  return (
    <section class="stack" aria-labelledby="codes-h">
      <h3 id="codes-h">{t("pendingCodes")}</h3>
      <p class="status">{t("pendingCodesHelp")}</p>
      <div class="filters">
        <label>{t("agency")}<AgencySelect t={t} lang={lang} agencies={agencies} value={agency} onChange={setAgency} empty={t("allAgencies")} /></label>
      </div>
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {notice !== null ? <p role="status">{notice}</p> : null}
      {codes === null ? <p>{t("loading")}</p> : codes.length === 0 ? <p>{t("noPendingCodes")}</p> : (
        <>
          <p class="status" data-testid="codes-count">{t(next === null ? "shownAll" : "shownSome", { n: codes.length })}</p>
          <table class="grid" data-testid="pending-codes">
            <thead><tr><th>{t("name")}</th><th>{t("agency")}</th><th>{t("createdAt")}</th><th>{t("expiresAt")}</th><th /></tr></thead>
            <tbody>{codes.map((c) => {
              const name = officialName(c, lang);
              return (
                <tr key={c.code_id} data-code={c.code_id} data-official={c.official_id}>
                  <td><a href={`#/admin/officials/${c.official_id}`}>{name}</a></td>
                  <td>{c.agency_code}</td>
                  <td>{when(c.created_at)}</td>
                  <td>{when(c.expires_at)}</td>
                  <td class="actions">
                    <button type="button" class="secondary small" aria-label={`${t("cancelCode")}: ${name}`} onClick={() => {
                      if (confirm(t("cancelCodeFor", { name, at: when(c.created_at) }))) void act(() => device.call({ type: "cancel_code", code_id: c.code_id }), t("codeCancelled", { name }));
                    }}>{t("cancelCode")}</button>
                    <button type="button" class="small" aria-label={`${t("issueCode")}: ${name}`} onClick={async () => {
                      try { onLetters([await issueCode(device, await getOfficial(device, c.official_id))]); } catch (e) { setError(explain(t, e)); }
                    }}>{t("issueCode")}</button>
                  </td>
                </tr>
              );
            })}</tbody>
          </table>
          {next !== null ? <button type="button" class="secondary" onClick={() => void load(next)}>{t("showMore")}</button> : null}
        </>
      )}
    </section>
  );
}
