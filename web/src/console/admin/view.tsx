/** The administration console: agencies, officials, HR import and export (for agency admins and superadmins). */
import type { ConsoleProps } from "../nav";
import { go } from "../route";
import { Agencies } from "./agencies";
import { adminT } from "./strings";

const TABS = ["agencies"] as const;

export function AdminView({ lang, device, path }: ConsoleProps) {
  const t = adminT(lang);
  const tab = TABS.find((x) => x === path[0]) ?? "agencies";
  return (
    <main class="console">
      <h2>{t("title")}</h2>
      <nav class="tabs" aria-label={t("tabs")}>
        {TABS.map((x) => <a key={x} href={`#/admin/${x}`} aria-current={x === tab ? "page" : undefined} onClick={(e) => { e.preventDefault(); go(["admin", x]); }}>{t(x)}</a>)}
      </nav>
      {tab === "agencies" ? <Agencies t={t} lang={lang} device={device} /> : null}
    </main>
  );
}
