/** The administration console: agencies, officials, policy, HR import and export (agency admins and superadmins). */
import { useState } from "preact/hooks";
import type { ConsoleProps } from "../nav";
import { go } from "../route";
import { Agencies } from "./agencies";
import type { Issued } from "./api";
import { PendingCodes } from "./codes";
import { Letters } from "./letters";
import { NewOfficial, OfficialPage, OfficialsList } from "./officials";
import { PolicyView } from "./policy";
import { ExportView, ImportView } from "./transfer";
import { adminT, type AdminKey } from "./strings";

const TABS: { id: string; label: AdminKey }[] = [
  { id: "agencies", label: "agencies" },
  { id: "officials", label: "officials" },
  { id: "codes", label: "codesTab" },
  { id: "policy", label: "policy" },
  { id: "import", label: "importTab" },
  { id: "export", label: "exportTab" },
];

export function AdminView({ lang, device, path }: ConsoleProps) {
  const t = adminT(lang);
  // Codes just issued live here, in memory only: never in the URL, storage or history.
  const [letters, setLetters] = useState<Issued[]>([]);
  const tab = TABS.find((x) => x.id === path[0])?.id ?? "agencies";
  const onLetters = (issued: Issued[]): void => { setLetters(issued); };
  let body;
  if (letters.length > 0) body = <Letters lang={lang} device={device} issued={letters} onClose={() => setLetters([])} />;
  else if (tab === "officials" && path[1] === "new") body = <NewOfficial t={t} lang={lang} device={device} />;
  else if (tab === "officials" && path[1] !== undefined) body = <OfficialPage t={t} lang={lang} device={device} id={path[1]} onLetters={onLetters} />;
  else if (tab === "officials") body = <OfficialsList t={t} lang={lang} device={device} onLetters={onLetters} />;
  else if (tab === "codes") body = <PendingCodes t={t} lang={lang} device={device} onLetters={onLetters} />;
  else if (tab === "import") body = <ImportView t={t} lang={lang} device={device} />;
  else if (tab === "export") body = <ExportView t={t} lang={lang} device={device} />;
  else if (tab === "policy") body = <PolicyView t={t} lang={lang} device={device} />;
  else body = <Agencies t={t} lang={lang} device={device} />;
  return (
    <main class="console">
      <h2>{t("title")}</h2>
      <nav class="tabs" aria-label={t("tabs")}>
        {TABS.map((x) => <a key={x.id} href={`#/admin/${x.id}`} aria-current={x.id === tab ? "page" : undefined} onClick={(e) => { e.preventDefault(); go(["admin", x.id]); }}>{t(x.label)}</a>)}
      </nav>
      {body}
    </main>
  );
}
