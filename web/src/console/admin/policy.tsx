/** Policy per agency or for the whole deployment: message scope, device limit, retention. */
import { useEffect, useState } from "preact/hooks";
import type { Device } from "../../client";
import type { Lang } from "../../i18n";
import { explain, listAgencies, type Agency, type Policy } from "./api";
import { AgencySelect } from "./officials";
import type { AdminKey, AT } from "./strings";

const DAY = 86_400;
const MIB = 1024 * 1024;
const mib = (bytes: number | null | undefined): string => (bytes == null ? "" : String(Math.round((bytes / MIB) * 1000) / 1000));
const bytes = (text: string): number | null => (text.trim() === "" ? null : Math.max(1, Math.round(Number(text) * MIB)));
const SCOPES = ["agency", "ministry", "all"] as const;

export function PolicyView({ t, lang, device }: { t: AT; lang: Lang; device: Device }) {
  const superadmin = device.roles.includes("superadmin");
  const [agencies, setAgencies] = useState<Agency[]>([]);
  const [agency, setAgency] = useState<string | null>(null);
  const [row, setRow] = useState<Policy | null>(null);
  const [effective, setEffective] = useState<Policy | null>(null);
  const [scope, setScope] = useState("");
  const [maxDevices, setMaxDevices] = useState("");
  const [days, setDays] = useState("");
  const [maxAttachment, setMaxAttachment] = useState("");
  const [perDay, setPerDay] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  useEffect(() => {
    listAgencies(device).then((a) => { setAgencies(a); setAgency(superadmin ? "" : a[0]?.id ?? ""); }, (e) => setError(explain(t, e)));
  }, []);
  const load = async (id: string): Promise<void> => {
    const reply = await device.call({ type: "get_policy", agency_id: id || null });
    const p = reply["policy"] as Policy;
    setRow(p);
    setEffective((reply["effective"] as Policy | null) ?? null);
    setScope(p.message_scope ?? "");
    setMaxDevices(p.max_devices === null ? "" : String(p.max_devices));
    setDays(p.retention_seconds === null ? "" : String(Math.round((p.retention_seconds / DAY) * 1000) / 1000));
    setMaxAttachment(mib(p.max_attachment_bytes));
    setPerDay(mib(p.attachment_bytes_per_day));
  };
  useEffect(() => { if (agency !== null) load(agency).catch((e) => setError(explain(t, e))); }, [agency]);
  const show = (p: Policy | null): string => p === null ? "" : [
    `${t("messageScope")}: ${p.message_scope === null ? t("unset") : t(`scope_${p.message_scope}` as AdminKey)}`,
    `${t("maxDevices")}: ${p.max_devices ?? t("unset")}`,
    `${t("retentionDays")}: ${p.retention_seconds === null ? t("unset") : Math.round((p.retention_seconds / DAY) * 1000) / 1000}`,
    `${t("maxAttachmentMib")}: ${p.max_attachment_bytes == null ? t("unset") : mib(p.max_attachment_bytes)}`,
    `${t("attachmentMibPerDay")}: ${p.attachment_bytes_per_day == null ? t("unset") : mib(p.attachment_bytes_per_day)}`,
  ].join(" · ");
  return (
    <section class="stack" aria-labelledby="policy-h">
      <h3 id="policy-h">{t("policy")}</h3>
      <label>{t("policyFor")}
        {agency === null ? null : <AgencySelect t={t} lang={lang} agencies={agencies} value={agency} onChange={setAgency} name="policy-agency" {...(superadmin ? { empty: t("globalRow") } : {})} />}
      </label>
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {notice !== null ? <p role="status">{notice}</p> : null}
      {row !== null ? <p data-testid="policy-row">{t("policyRow")}: {show(row)}</p> : null}
      {effective !== null ? <p data-testid="policy-effective">{t("effective")}: {show(effective)}</p> : null}
      <form class="stack card" onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        setNotice(null);
        // The row is replaced whole: fields this form does not know are sent back as they were.
        const policy: Policy = {
          ...row,
          message_scope: scope === "" ? null : (scope as Policy["message_scope"]),
          max_devices: maxDevices.trim() === "" ? null : Number(maxDevices),
          retention_seconds: days.trim() === "" ? null : Math.round(Number(days) * DAY),
          max_attachment_bytes: bytes(maxAttachment),
          attachment_bytes_per_day: bytes(perDay),
        };
        try {
          await device.call({ type: "set_policy", agency_id: agency || null, policy });
          setNotice(t("saved"));
          await load(agency ?? "");
        } catch (err) { setError(explain(t, err)); }
      }}>
        <label>{t("messageScope")}
          <select name="message_scope" value={scope} onChange={(e) => setScope(e.currentTarget.value)}>
            <option value="">{t("inherit")}</option>
            {SCOPES.map((s) => <option key={s} value={s}>{t(`scope_${s}`)}</option>)}
          </select>
        </label>
        <label>{t("maxDevices")}<input type="number" name="max_devices" min={1} max={100} placeholder={t("inherit")} value={maxDevices} onInput={(e) => setMaxDevices(e.currentTarget.value)} /></label>
        <label>{t("retentionDays")}<input type="number" name="retention_days" min={0.001} step="any" placeholder={t("inherit")} value={days} onInput={(e) => setDays(e.currentTarget.value)} /></label>
        <label>{t("maxAttachmentMib")}<input type="number" name="max_attachment_mib" min={0.001} step="any" placeholder={t("inherit")} value={maxAttachment} onInput={(e) => setMaxAttachment(e.currentTarget.value)} /></label>
        <label>{t("attachmentMibPerDay")}<input type="number" name="attachment_mib_per_day" min={0.001} step="any" placeholder={t("inherit")} value={perDay} onInput={(e) => setPerDay(e.currentTarget.value)} /></label>
        <button type="submit">{t("save")}</button>
      </form>
    </section>
  );
}
