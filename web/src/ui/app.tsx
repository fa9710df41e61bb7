/** The app's screens (skeleton: enrolment form while the client is wired in). */
import { useEffect, useState } from "preact/hooks";
import { loadSodium } from "../crypto/sodium";
import { translate, type Key, type Lang } from "../i18n";

export function App() {
  const [lang, setLang] = useState<Lang>("th");
  const [ready, setReady] = useState(false);
  const t = (k: Key, v?: Record<string, string | number>) => translate(lang, k, v);
  useEffect(() => {
    void loadSodium().then(() => setReady(true));
  }, []);
  useEffect(() => {
    document.documentElement.lang = lang;
    document.title = t("appName");
  }, [lang]);
  return (
    <>
      <header class="bar">
        <h1>{t("appName")}</h1>
        <button type="button" aria-label={t("languageLabel")} onClick={() => setLang(lang === "th" ? "en" : "th")}>{t("language")}</button>
      </header>
      <main>
        {!ready ? <p class="loading">{t("loading")}</p> : (
          <form class="stack" onSubmit={(e) => e.preventDefault()}>
            <h2>{t("enrolTitle")}</h2>
            <p>{t("enrolHelp")}</p>
            <label>{t("enrolCode")}<input type="text" name="code" autocomplete="off" /></label>
            <button type="submit">{t("enrol")}</button>
          </form>
        )}
      </main>
    </>
  );
}
