/** The notifications opt-in on the settings screen (docs/WEB.md "Notifications"). */
import { useEffect, useState } from "preact/hooks";
import type { Device } from "../client";
import type { Key } from "../i18n";
import { disablePush, enablePush, pushState, type PushState } from "../push";

type T = (k: Key, v?: Record<string, string | number>) => string;

const STATE_TEXT: Record<PushState, Key> = { on: "pushOn", off: "pushOff", denied: "pushDenied", unsupported: "pushUnsupported" };

export function PushSetting({ t, device }: { t: T; device: Device }) {
  const [state, setState] = useState<PushState | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => { void pushState(device).then(setState, () => setState("off")); }, [device]);
  if (state === null) return null;
  const toggle = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      if (state === "on") {
        await disablePush(device);
        setState("off");
      } else {
        setState(await enablePush(device));
      }
    } catch {
      setError(t("errorGeneric"));
    }
    setBusy(false);
  };
  return (
    <section aria-labelledby="push-title" class="stack">
      <h3 id="push-title">{t("pushTitle")}</h3>
      <p>{t("pushHelp")}</p>
      <p class="status" role="status" data-testid="push-state" data-state={state}>{t(STATE_TEXT[state])}</p>
      {state === "on" || state === "off" ? (
        <button type="button" disabled={busy} onClick={() => void toggle()}>{t(state === "on" ? "pushDisable" : "pushEnable")}</button>
      ) : null}
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
    </section>
  );
}
