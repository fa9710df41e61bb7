/** The app's screens. State lives in the Device; screens re-render on its changes. */
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { BlockedError, Device, type Chat, type Msg } from "../client";
import { Cancelled } from "../files/transfer";
import { thumbnailOf } from "../files/thumbnail";
import { FileBox } from "./filebox";
import { loadSodium } from "../crypto/sodium";
import { formatTime, translate, type Key, type Lang } from "../i18n";
import { ServerError, type Frame } from "../net/wire";
import { visibleEntries } from "../console/nav";
import { go, useRoute } from "../console/route";
import { disablePush, wakeOnNotification } from "../push";
import { Vault, WrongPassphrase } from "../store/vault";
import { qrSvg } from "./qr";
import { auditText } from "../console/audit/strings";
import { AccessesView } from "../console/audit/view";
import { PushSetting } from "./push";

type T = (k: Key, v?: Record<string, string | number>) => string;
type Screen =
  | { name: "home" }
  | { name: "search" }
  | { name: "chat"; chatId: string }
  | { name: "safety"; official: string; back: string }
  | { name: "newGroup" }
  | { name: "groupInfo"; chatId: string }
  | { name: "settings" }
  | { name: "accesses" };

const PAGE = 50;

function initialLang(): Lang {
  const saved = sessionStorage.getItem("lang"); // a UI preference, never a secret
  return saved === "en" || saved === "th" ? saved : "th";
}

export function App() {
  const [lang, setLang] = useState<Lang>(initialLang);
  const [vault, setVault] = useState<Vault | null>(null);
  const [device, setDevice] = useState<Device | null>(null);
  const [loaded, setLoaded] = useState(false);
  const [ended, setEnded] = useState<"revoked" | "signedOut" | null>(null);
  const [locked, setLocked] = useState(false);
  const [, setTick] = useState(0);
  const t: T = (k, v) => translate(lang, k, v);

  useEffect(() => {
    void (async () => {
      await loadSodium();
      const v = await Vault.open();
      setVault(v);
      if (v.locked) {
        setLocked(true);
        setLoaded(true);
        return;
      }
      const d = await Device.load(v);
      setDevice(d);
      setLoaded(true);
      d?.start();
    })();
  }, []);
  useEffect(() => {
    // The first usable screen (enrolment or conversations): web/tools/budgets.py reads this mark.
    if (loaded && performance.getEntriesByName("gchat:interactive").length === 0) performance.mark("gchat:interactive");
  }, [loaded]);
  // Layout, not a plain effect: the page's language changes in the same commit as its
  // text (a plain effect runs after the paint, so a screen reader could meet English read as Thai).
  useLayoutEffect(() => {
    document.documentElement.lang = lang;
    document.title = t("appName");
    sessionStorage.setItem("lang", lang);
  }, [lang]);
  useEffect(() => {
    if (device === null) return undefined;
    const sync = (): void => {
      if (device.status === "revoked") {
        setEnded("revoked");
        void disablePush(device); // the node stops pushing to a revoked device; the browser drops it too
      }
      setTick((n) => n + 1);
    };
    const off = device.subscribe(sync);
    // The device may have connected (and said so) before this effect ran: a
    // fast connection then stayed "connecting" on screen, without its roles.
    sync();
    const offWake = wakeOnNotification(device);
    return () => { off(); offWake(); };
  }, [device]);

  const bar = (
    <button type="button" class="lang" aria-label={`${t("languageLabel")}: ${t("language")}`} onClick={() => setLang(lang === "th" ? "en" : "th")}><span lang={lang === "th" ? "en" : "th"}>{t("language")}</span></button>
  );
  let body;
  if (!loaded) body = <main><p class="loading">{t("loading")}</p></main>;
  else if (ended === "revoked") body = <main><p role="alert" class="error" data-testid="revoked">{t("revoked")}</p></main>;
  else if (locked && vault !== null) {
    body = <Unlock t={t} onUnlock={async (passphrase) => {
      await vault.unlock(passphrase);
      const d = await Device.load(vault);
      setDevice(d);
      setLocked(false);
      d?.start();
    }} onWipe={async () => {
      await vault.wipe();
      setVault(null);
      setLocked(false);
    }} />;
  } else if (device === null) {
    body = <Enrol t={t} onEnrolled={async (code, name, passphrase) => {
      const v = vault ?? (await Vault.open());
      try {
        if (passphrase) await v.setPassphrase(passphrase);
        const d = await Device.enrol(v, code, name);
        setVault(v);
        setDevice(d);
        d.start();
      } catch (e) {
        await v.wipe(); // nothing half-made stays behind (nor a passphrase for no device)
        setVault(null);
        throw e;
      }
    }} />;
  } else body = <Shell t={t} lang={lang} device={device} onSignedOut={async () => {
    await disablePush(device); // the node forgets the subscription, the browser drops it
    await device.signOut();
    setDevice(null);
    setVault(null); // a new (empty) store is made only when the next enrolment starts
    setEnded("signedOut");
  }} />;
  return (
    <>
      <header class="bar"><h1>{t("appName")}</h1>{device !== null && ended === null ? <StatusLine t={t} device={device} /> : null}{bar}</header>
      {body}
    </>
  );
}

/** The chats, and beside them the console views the official's roles allow (web/src/console/nav.ts). */
function Shell({ t, lang, device, onSignedOut }: { t: T; lang: Lang; device: Device; onSignedOut: () => Promise<void> }) {
  const route = useRoute();
  const entries = visibleEntries(device.roles);
  const current = entries.find((e) => e.id === route[0]);
  return (
    <>
      {entries.length > 0 ? (
        <nav class="console-nav" aria-label={t("consoleNav")}>
          <a href="#/" aria-current={current === undefined ? "page" : undefined} onClick={(e) => { e.preventDefault(); go([]); }}>{t("navChats")}</a>
          {entries.map((e) => <a key={e.id} href={`#/${e.id}`} aria-current={current === e ? "page" : undefined} onClick={(ev) => { ev.preventDefault(); go([e.id]); }}>{t(e.label)}</a>)}
        </nav>
      ) : null}
      {current !== undefined ? <current.View lang={lang} device={device} path={route.slice(1)} /> : <Home t={t} lang={lang} device={device} onSignedOut={onSignedOut} />}
    </>
  );
}

function StatusLine({ t, device }: { t: T; device: Device }) {
  const key: Key = device.status === "online" ? "online" : device.status === "offline" ? "offline" : device.status === "displaced" ? "displaced" : "connecting";
  return <span class="status-pill" role="status" aria-live="polite" data-status={device.status}>{t(key)}</span>;
}

function Unlock({ t, onUnlock, onWipe }: { t: T; onUnlock: (passphrase: string) => Promise<void>; onWipe: () => Promise<void> }) {
  const [passphrase, setPassphrase] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <main>
      <form class="stack" onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try {
          await onUnlock(passphrase);
        } catch (err) {
          setError(t(err instanceof WrongPassphrase ? "wrongPassphrase" : "errorGeneric"));
          setBusy(false);
        }
      }}>
        <h2>{t("unlockTitle")}</h2>
        <label>{t("passphrase")}<input type="password" name="passphrase" autocomplete="current-password" required value={passphrase} onInput={(e) => setPassphrase(e.currentTarget.value)} /></label>
        {error !== null ? <p role="alert" class="error">{error}</p> : null}
        <button type="submit" disabled={busy}>{t("unlock")}</button>
        <button type="button" class="secondary" onClick={async () => { if (confirm(t("signOutConfirm"))) await onWipe(); }}>{t("forgotPassphrase")}</button>
      </form>
    </main>
  );
}

function Enrol({ t, onEnrolled }: { t: T; onEnrolled: (code: string, name: string, passphrase: string) => Promise<void> }) {
  const [code, setCode] = useState("");
  const [passphrase, setPassphrase] = useState("");
  const [name, setName] = useState(t("deviceNameDefault"));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [scanning, setScanning] = useState(false);
  const video = useRef<HTMLVideoElement>(null);
  const canScan = "BarcodeDetector" in window && !!navigator.mediaDevices;

  useEffect(() => {
    if (!scanning) return undefined;
    let stream: MediaStream | null = null;
    let stop = false;
    void (async () => {
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
        if (video.current === null) return;
        video.current.srcObject = stream;
        await video.current.play();
        const detector = new (window as unknown as { BarcodeDetector: new (o: unknown) => { detect: (v: HTMLVideoElement) => Promise<{ rawValue: string }[]> } }).BarcodeDetector({ formats: ["qr_code"] });
        while (!stop) {
          const found = await detector.detect(video.current);
          if (found[0] !== undefined) { setCode(found[0].rawValue.trim()); setScanning(false); break; }
          await new Promise((r) => setTimeout(r, 300));
        }
      } catch {
        setScanning(false);
      }
    })();
    return () => { stop = true; stream?.getTracks().forEach((tr) => tr.stop()); };
  }, [scanning]);

  return (
    <main>
      <form class="stack" onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        setError(null);
        try {
          await onEnrolled(code, name.trim() || t("deviceNameDefault"), passphrase);
        } catch (err) {
          const c = err instanceof ServerError ? err.code : "";
          setError(t(err instanceof WrongPassphrase ? "passphraseTooShort" : c === "enrolment_code_invalid" ? "errorCode" : c === "device_limit" ? "errorDeviceLimit" : c === "rate_limited" ? "errorRate" : "errorGeneric"));
          setBusy(false);
        }
      }}>
        <h2>{t("enrolTitle")}</h2>
        <p id="enrol-help">{t("enrolHelp")}</p>
        <label>{t("enrolCode")}<input type="text" name="code" autocomplete="one-time-code" autocapitalize="characters" spellcheck={false} required aria-describedby="enrol-help" value={code} onInput={(e) => setCode(e.currentTarget.value)} /></label>
        <label>{t("deviceName")}<input type="text" name="device" maxLength={200} value={name} onInput={(e) => setName(e.currentTarget.value)} /></label>
        <label>{t("passphraseOptional")}<input type="password" name="passphrase" autocomplete="new-password" aria-describedby="passphrase-help" value={passphrase} onInput={(e) => setPassphrase(e.currentTarget.value)} /></label>
        <p id="passphrase-help" class="status">{t("passphraseHelp")}</p>
        {canScan ? <button type="button" class="secondary" onClick={() => setScanning(!scanning)}>{scanning ? t("stopScan") : t("scanQr")}</button> : null}
        {scanning ? <video ref={video} muted playsInline aria-label={t("scanQr")} /> : null}
        {error !== null ? <p role="alert" class="error">{error}</p> : null}
        <button type="submit" disabled={busy}>{busy ? t("enrolling") : t("enrol")}</button>
      </form>
    </main>
  );
}

function Home({ t, lang, device, onSignedOut }: { t: T; lang: Lang; device: Device; onSignedOut: () => Promise<void> }) {
  const [screen, setScreen] = useState<Screen>({ name: "home" });
  const home = () => setScreen({ name: "home" });
  if (device.status === "displaced") return <main><p role="alert">{t("displaced")}</p><button type="button" onClick={() => location.reload()}>{t("reconnect")}</button></main>;
  switch (screen.name) {
    case "search":
      return <Search t={t} device={device} onBack={home} onPick={async (id, name) => setScreen({ name: "chat", chatId: await device.openDirect(id, name) })} />;
    case "chat":
      return <ChatView key={screen.chatId} t={t} lang={lang} device={device} chatId={screen.chatId} onBack={home}
        onSafety={(official) => setScreen({ name: "safety", official, back: screen.chatId })}
        onInfo={() => setScreen({ name: "groupInfo", chatId: screen.chatId })} />;
    case "safety":
      return <Safety t={t} device={device} official={screen.official} onBack={() => setScreen({ name: "chat", chatId: screen.back })} />;
    case "newGroup":
      return <NewGroup t={t} device={device} onBack={home} onCreated={(chatId) => setScreen({ name: "chat", chatId })} />;
    case "groupInfo":
      return <GroupInfo t={t} device={device} chatId={screen.chatId} onBack={() => setScreen({ name: "chat", chatId: screen.chatId })} />;
    case "settings":
      return <Settings t={t} lang={lang} device={device} onBack={home} onSignedOut={onSignedOut} onAccesses={() => setScreen({ name: "accesses" })} />;
    case "accesses":
      return <AccessesView lang={lang} device={device} onBack={() => setScreen({ name: "settings" })} backLabel={t("back")} />;
    default:
      return <ChatList t={t} lang={lang} device={device} onOpen={(chatId) => setScreen({ name: "chat", chatId })}
        onSearch={() => setScreen({ name: "search" })} onNewGroup={() => setScreen({ name: "newGroup" })} onSettings={() => setScreen({ name: "settings" })} />;
  }
}

function ChangedBanners({ t, device, officials }: { t: T; device: Device; officials: string[] }) {
  const changed = officials.filter((o) => device.peer(o)?.changed);
  return <>{changed.map((o) => (
    <div class="banner" role="alert" data-testid="device-change-banner" key={o}>
      <span>{t("devicesChanged", { name: device.nameOf(o) })}{device.peer(o)?.verified ? ` ${t("verifiedChangedBlock")}` : ""}</span>
      <button type="button" class="secondary" onClick={() => void device.acceptChange(o)}>{t("acceptChange")}</button>
    </div>
  ))}</>;
}

function ChatList({ t, lang, device, onOpen, onSearch, onNewGroup, onSettings }: { t: T; lang: Lang; device: Device; onOpen: (id: string) => void; onSearch: () => void; onNewGroup: () => void; onSettings: () => void }) {
  const chats = Object.values(device.chats).sort((a, b) => b.lastAt - a.lastAt);
  const peers = chats.filter((c) => c.kind === "direct" && c.peer).map((c) => c.peer!);
  return (
    <main>
      <ChangedBanners t={t} device={device} officials={peers} />
      <div class="actions">
        <button type="button" onClick={onSearch}>{t("newChat")}</button>
        <button type="button" class="secondary" onClick={onNewGroup}>{t("newGroup")}</button>
        <button type="button" class="secondary" onClick={onSettings}>{t("settings")}</button>
      </div>
      <h2>{t("conversations")}</h2>
      {chats.length === 0 ? <p>{t("noConversations")}</p> : (
        <ul class="list" aria-label={t("conversations")}>
          {chats.map((c: Chat) => (
            <li key={c.id}>
              <button type="button" class="row" onClick={() => onOpen(c.id)} data-testid="chat-row">
                <span class="name">{chatTitle(t, device, c)}<span class="last">{c.last}</span></span>
                <span class="status">{c.lastAt ? formatTime(lang, c.lastAt) : ""}</span>
                {c.unread > 0 ? <span class="badge" aria-label={t("unread", { n: c.unread })}>{c.unread}</span> : null}
              </button>
            </li>
          ))}
        </ul>
      )}
    </main>
  );
}

function chatTitle(t: T, device: Device, c: Chat): string {
  if (c.kind === "group") return c.title || t("group");
  if (c.peer === device.officialId) return t("myDevices");
  return c.title || device.nameOf(c.peer ?? "");
}

function Search({ t, device, onBack, onPick, pickLabel }: { t: T; device: Device; onBack: () => void; onPick: (id: string, name: string) => void; pickLabel?: string }) {
  const [query, setQuery] = useState("");
  const [results, setResults] = useState<Frame[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  return (
    <main>
      <button type="button" class="secondary" onClick={onBack}>{t("back")}</button>
      <form role="search" class="actions" onSubmit={async (e) => {
        e.preventDefault();
        try { setResults(await device.search(query)); setError(null); } catch { setError(t("errorGeneric")); }
      }}>
        <label class="grow">{t("search")}<input type="search" name="q" placeholder={t("searchPlaceholder")} value={query} onInput={(e) => setQuery(e.currentTarget.value)} /></label>
        <button type="submit">{t("search")}</button>
      </form>
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {results !== null && results.length === 0 ? <p>{t("noResults")}</p> : null}
      <ul class="list">
        {(results ?? []).map((r) => {
          const name = String(r["name_th"] ?? r["name_en"] ?? "");
          return (
            <li key={String(r["official_id"])}>
              <button type="button" class="row" onClick={() => onPick(String(r["official_id"]), name)} aria-label={pickLabel ? `${pickLabel}: ${name}` : name}>
                <span class="name">{name}<span class="last">{String(r["position"] ?? "")} {String(r["agency_name_th"] ?? r["agency_code"] ?? "")}</span></span>
              </button>
            </li>
          );
        })}
      </ul>
    </main>
  );
}

function MessageRow({ t, lang, device, m, chatId, group }: { t: T; lang: Lang; device: Device; m: Msg; chatId: string; group: boolean }) {
  const mine = m.from === device.officialId && m.state !== "received";
  const stateText = m.state === "sending" ? t("sending") : m.state === "sent" ? t("sent") : m.state === "failed" ? t("failed") : "";
  if (m.state === "unreadable") {
    return <div class="msg undecryptable" data-testid="message">{t("undecryptable", { reason: m.reason ?? "" })}</div>;
  }
  return (
    <div class={mine ? "msg mine" : "msg"} data-testid="message" data-state={m.state}>
      {group && !mine ? <span class="meta">{device.nameOf(m.from) || t("you")}</span> : null}
      {m.file ? <FileBox t={t} device={device} file={m.file} /> : null}
      {m.text || !m.file ? <span class="text">{m.text}</span> : null}
      <span class="meta">{formatTime(lang, m.at)}{stateText ? ` · ${stateText}` : ""}
        {m.state === "failed" ? <> <button type="button" class="secondary" onClick={() => void device.retry(chatId, m.id)}>{t("retry")}</button></> : null}
      </span>
    </div>
  );
}

function ChatView({ t, lang, device, chatId, onBack, onSafety, onInfo }: { t: T; lang: Lang; device: Device; chatId: string; onBack: () => void; onSafety: (o: string) => void; onInfo: () => void }) {
  const [msgs, setMsgs] = useState<Msg[]>([]);
  const [shown, setShown] = useState(PAGE);
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [loadedOnce, setLoadedOnce] = useState(false);
  const [uploads, setUploads] = useState<Upload[]>([]);
  const chat = device.chats[chatId];
  const end = useRef<HTMLDivElement>(null);
  useEffect(() => {
    // History decrypted from storage and on screen: web/tools/budgets.py reads these marks.
    if (loadedOnce) performance.mark(`gchat:history:${msgs.length}:${Math.min(shown, msgs.length)}`);
  }, [loadedOnce, shown]);
  useEffect(() => {
    let live = true;
    const refresh = () => void device.messages(chatId).then((list) => { if (live) { setMsgs([...list]); setLoadedOnce(true); void device.markRead(chatId); } });
    refresh();
    const off = device.subscribe(refresh);
    return () => { live = false; off(); };
  }, [chatId]);
  useEffect(() => { end.current?.scrollIntoView?.({ block: "end" }); }, [msgs.length]);
  if (chat === undefined) return <main><button type="button" onClick={onBack}>{t("back")}</button></main>;
  const group = chat.kind === "group";
  const cid = chatId.slice(2);
  const canPost = !group || device.canPost(cid);
  const left = group && !device.isMember(cid);
  const peer = chat.peer;
  const page = msgs.slice(Math.max(0, msgs.length - shown));
  /** A picked file (or photo) goes at once, with what is typed as its caption. */
  const pick = (input: HTMLInputElement): void => {
    const file = input.files?.[0];
    input.value = "";
    if (file === undefined) return;
    const caption = text.trim();
    setText("");
    const u: Upload = { key: `${Date.now()}-${Math.random()}`, name: file.name, done: 0, total: 0, abort: new AbortController() };
    const update = (): void => setUploads((list) => list.map((x) => (x.key === u.key ? { ...u } : x)));
    setUploads((list) => [...list, u]);
    void (async () => {
      try {
        await device.sendFile(chatId, file, caption, await thumbnailOf(file), (done, total) => { u.done = done; u.total = total; update(); }, u.abort.signal);
        setError(null);
      } catch (err) {
        if (!(err instanceof Cancelled)) setError(t(sendFileError(err)));
      } finally {
        setUploads((list) => list.filter((x) => x.key !== u.key));
      }
    })();
  };
  return (
    <main class="chat">
      <div class="actions">
        <button type="button" class="secondary" onClick={onBack}>{t("back")}</button>
        <h2 class="grow tight" data-testid="chat-title">{chatTitle(t, device, chat)}
          {peer && device.isVerified(peer) ? <span class="verified-mark"> ✓ {t("verified")}</span> : null}</h2>
        {!group && peer && peer !== device.officialId ? <button type="button" class="secondary" onClick={() => onSafety(peer)}>{t("safetyNumber")}</button> : null}
        {group ? <button type="button" class="secondary" onClick={onInfo}>{t("members")}</button> : null}
      </div>
      {peer ? <ChangedBanners t={t} device={device} officials={[peer]} /> : null}
      {peer && device.withoutOneTimePrekey(peer) ? <p class="status" data-testid="no-one-time-prekey">{t("noOneTimePrekey")}</p> : null}
      <section class="messages" aria-label={t("message")} aria-live="polite">
        {msgs.length > shown ? <button type="button" class="secondary" onClick={() => setShown(shown + PAGE)}>{t("olderMessages")}</button> : null}
        {page.map((m) => <MessageRow key={m.id} t={t} lang={lang} device={device} m={m} chatId={chatId} group={group} />)}
        <div ref={end} />
      </section>
      {uploads.map((u) => (
        <div class="upload" data-testid="upload" key={u.key}>
          <span>{t("uploading", { name: u.name })}</span>
          <progress max={u.total || 1} value={u.done} aria-label={t("uploading", { name: u.name })} />
          <button type="button" class="secondary" onClick={() => u.abort.abort()}>{t("cancel")}</button>
        </div>
      ))}
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {canPost ? (
        <div class="attach">
          <label class="button secondary">{t("attachFile")}<input type="file" class="visually-hidden" data-testid="attach-file" onChange={(e) => { pick(e.currentTarget); }} /></label>
          <label class="button secondary">{t("takePhoto")}<input type="file" class="visually-hidden" accept="image/*" capture="environment" data-testid="attach-photo" onChange={(e) => { pick(e.currentTarget); }} /></label>
        </div>
      ) : null}
      {canPost ? (
        <form class="compose" onSubmit={async (e) => {
          e.preventDefault();
          const body = text.trim();
          if (!body) return;
          setText("");
          try { await device.sendText(chatId, body); setError(null); } catch (err) { setError(err instanceof BlockedError ? t("verifiedChangedBlock") : t("errorGeneric")); }
        }}>
          <label class="visually-hidden" for="compose">{t("typeMessage")}</label>
          <input id="compose" type="text" name="message" placeholder={t("typeMessage")} autocomplete="off" value={text} onInput={(e) => setText(e.currentTarget.value)} />
          <button type="submit">{t("send")}</button>
        </form>
      ) : <p class="status">{t(left ? "notMember" : "announcementBlocked")}</p>}
    </main>
  );
}

interface Upload { key: string; name: string; done: number; total: number; abort: AbortController }

function sendFileError(err: unknown): Key {
  const code = err instanceof ServerError ? err.code : "";
  if (code === "too_large") return "fileTooLarge";
  if (code === "quota_exceeded") return "fileQuota";
  if (code === "storage_full") return "fileStorageFull";
  if (err instanceof BlockedError) return "verifiedChangedBlock";
  return "fileSendFailed";
}

function Safety({ t, device, official, onBack }: { t: T; device: Device; official: string; onBack: () => void }) {
  const [digits, setDigits] = useState<string | null>(null);
  useEffect(() => { void device.safetyNumberWith(official).then(setDigits); }, [official]);
  const svg = digits === null ? "" : qrSvg(digits.replace(/ /g, ""));
  return (
    <main>
      <button type="button" class="secondary" onClick={onBack}>{t("back")}</button>
      <h2>{t("safetyNumber")}: {device.nameOf(official)}</h2>
      <p>{t("safetyHelp")}</p>
      {digits === null ? <p>{t("loading")}</p> : <>
        <p class="digits" data-testid="safety-number">{digits}</p>
        <div class="qr" role="img" aria-label={`QR ${t("safetyNumber")}`} dangerouslySetInnerHTML={{ __html: svg }} />
        <p>{device.isVerified(official) ? <span class="verified-mark">✓ {t("verified")}</span> : t("notVerified")}</p>
        <button type="button" onClick={() => void device.markVerified(official)}>{t("markVerified")}</button>
      </>}
    </main>
  );
}

function NewGroup({ t, device, onBack, onCreated }: { t: T; device: Device; onBack: () => void; onCreated: (chatId: string) => void }) {
  const [title, setTitle] = useState("");
  const [members, setMembers] = useState<{ id: string; name: string }[]>([]);
  const [announcement, setAnnouncement] = useState(false);
  const [adding, setAdding] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (adding) return <Search t={t} device={device} pickLabel={t("addMember")} onBack={() => setAdding(false)} onPick={(id, name) => { device.state.names[id] = name; setMembers([...members.filter((m) => m.id !== id), { id, name }]); setAdding(false); }} />;
  return (
    <main>
      <button type="button" class="secondary" onClick={onBack}>{t("back")}</button>
      <form class="stack" onSubmit={async (e) => {
        e.preventDefault();
        try { onCreated(await device.createGroup(title.trim(), members.map((m) => m.id), announcement)); } catch { setError(t("errorGeneric")); }
      }}>
        <h2>{t("newGroup")}</h2>
        <label>{t("groupTitle")}<input type="text" name="title" required maxLength={200} value={title} onInput={(e) => setTitle(e.currentTarget.value)} /></label>
        <h3>{t("members")}</h3>
        <ul class="list">{members.map((m) => <li key={m.id}>{m.name}</li>)}</ul>
        <button type="button" class="secondary" onClick={() => setAdding(true)}>{t("addMember")}</button>
        <label class="inline"><input type="checkbox" checked={announcement} onChange={(e) => setAnnouncement(e.currentTarget.checked)} />{t("announcementOnly")}</label>
        {error !== null ? <p role="alert" class="error">{error}</p> : null}
        <button type="submit">{t("create")}</button>
      </form>
    </main>
  );
}

function GroupInfo({ t, device, chatId, onBack }: { t: T; device: Device; chatId: string; onBack: () => void }) {
  const cid = chatId.slice(2);
  const view = device.conversation(cid);
  const [adding, setAdding] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (view === undefined) return <main><button type="button" onClick={onBack}>{t("back")}</button></main>;
  const amAdmin = view.members.some((m) => m.official_id === device.officialId && m.admin);
  const member = device.isMember(cid);
  if (adding) return <Search t={t} device={device} pickLabel={t("addMember")} onBack={() => setAdding(false)} onPick={async (id, name) => {
    device.state.names[id] = name;
    try { await device.addMembers(cid, [id]); } catch { setError(t("errorGeneric")); }
    setAdding(false);
  }} />;
  return (
    <main>
      <button type="button" class="secondary" onClick={onBack}>{t("back")}</button>
      <h2>{view.title}</h2>
      {view.announcementOnly ? <p class="status">{t("announcementOnly")}</p> : null}
      <h3>{t("members")}</h3>
      <ul class="list">
        {view.members.map((m) => (
          <li key={m.official_id} class="actions spread">
            <span>{m.official_id === device.officialId ? t("you") : device.nameOf(m.official_id)}{m.admin ? ` (${t("admin")})` : ""}</span>
            {amAdmin && m.official_id !== device.officialId ? <button type="button" class="secondary" aria-label={`${t("remove")}: ${device.nameOf(m.official_id)}`} onClick={async () => {
              try { await device.removeMembers(cid, [m.official_id]); } catch { setError(t("errorGeneric")); }
            }}>{t("remove")}</button> : null}
          </li>
        ))}
      </ul>
      {amAdmin ? <button type="button" onClick={() => setAdding(true)}>{t("addMember")}</button> : null}
      {amAdmin ? <Rename t={t} title={view.title} onRename={async (title) => {
        try { await device.renameGroup(cid, title); setError(null); } catch { setError(t("errorGeneric")); }
      }} /> : null}
      {member ? <button type="button" class="secondary" onClick={async () => {
        try { await device.leaveGroup(cid); onBack(); } catch { setError(t("errorGeneric")); }
      }}>{t("leaveGroup")}</button> : <p class="status">{t("notMember")}</p>}
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
    </main>
  );
}

function Rename({ t, title, onRename }: { t: T; title: string; onRename: (title: string) => Promise<void> }) {
  const [value, setValue] = useState(title);
  return (
    <form class="actions" onSubmit={(e) => { e.preventDefault(); if (value.trim()) void onRename(value.trim()); }}>
      <label class="grow">{t("groupTitle")}<input type="text" name="title" maxLength={200} value={value} onInput={(e) => setValue(e.currentTarget.value)} /></label>
      <button type="submit">{t("rename")}</button>
    </form>
  );
}

function Settings({ t, lang, device, onBack, onSignedOut, onAccesses }: { t: T; lang: Lang; device: Device; onBack: () => void; onSignedOut: () => Promise<void>; onAccesses: () => void }) {
  return (
    <main>
      <button type="button" class="secondary" onClick={onBack}>{t("back")}</button>
      <h2>{t("myDevices")}</h2>
      <ul class="list">
        {device.ownDevices().map((d) => <li key={d.deviceId} class="pad">{d.current ? `${t("thisDevice")}: ${device.state.deviceName}` : `…${d.deviceId.slice(-6)}`}</li>)}
      </ul>
      <button type="button" class="secondary" data-testid="open-accesses" onClick={onAccesses}>{auditText(lang, "accessesTitle")}</button>
      <PushSetting t={t} device={device} />
      <button type="button" onClick={async () => { if (confirm(t("signOutConfirm"))) await onSignedOut(); }}>{t("signOut")}</button>
    </main>
  );
}
