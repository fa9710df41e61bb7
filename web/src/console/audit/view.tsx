/**
 * The auditor's screens (issue 14 items 5-6): the pinned audit key, what the
 * browser verified at this visit, events with names and local times and a
 * mark per event, a chart of events per hour, export with proofs; and, for
 * every official, who looked at their records. Shown only to officials whose
 * roles include `auditor` (the node refuses the requests of anyone else).
 */
import { useEffect, useMemo, useState } from "preact/hooks";
import {
  Auditor, BadAuditKey, KINDS, keyFingerprint, officialsOf, perHour,
  type AuditEvent, type EventCheck, type Filter, type HeadCheck,
} from "./auditor";
import { auditT, auditTime, isAuditKey, type AT } from "./strings";
import type { Device } from "../../client";
import type { ConsoleProps } from "../nav";
import { hex } from "../../crypto/bytes";
import type { Lang } from "../../i18n";
import { ServerError, type Frame } from "../../net/wire";
import { HourChart } from "./chart";

type A = AT;
const CHART_PAGES = 4; // up to 2,000 events in the chart
const PAGE = 50;

const errorText = (a: A, e: unknown): string => a(e instanceof ServerError && e.code === "forbidden" ? "forbidden" : "error");

export function AuditView({ lang, device }: ConsoleProps) {
  const a = auditT(lang);
  const auditor = useMemo(() => new Auditor((f) => device.call(f), device.store), [device]);
  const [ready, setReady] = useState(false);
  const [head, setHead] = useState<HeadCheck | null>(null);
  const [busy, setBusy] = useState(false);

  const check = async (): Promise<void> => {
    setBusy(true);
    try { setHead(await auditor.checkHead()); } catch { setHead(null); } finally { setBusy(false); }
  };
  useEffect(() => { void auditor.load().then(() => { setReady(true); if (auditor.pinnedKey !== null) void check(); }); }, [auditor]);

  if (!ready) return <main><p class="loading">{a("checking")}</p></main>;
  return (
    <main class="audit" data-testid="audit-view">
      <h2>{a("auditTitle")}</h2>
      <KeyPanel a={a} auditor={auditor} onPinned={() => void check()} />
      {auditor.pinnedKey !== null ? <HeadPanel a={a} lang={lang} head={head} busy={busy} /> : null}
      {head?.ok ? <Events a={a} lang={lang} auditor={auditor} onRecheck={check} /> : null}
    </main>
  );
}

function KeyPanel({ a, auditor, onPinned }: { a: A; auditor: Auditor; onPinned: () => void }) {
  const key = auditor.pinnedKey;
  const [editing, setEditing] = useState(key === null);
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  if (!editing && key !== null) {
    return (
      <section class="stack" aria-labelledby="audit-key-title">
        <h3 id="audit-key-title">{a("keyTitle")}</h3>
        <p data-testid="audit-key">{a("keyPinned", { id: keyFingerprint(key) })}</p>
        <p class="mono fine" data-testid="audit-key-hex">{hex(key)}</p>
        <div class="actions"><button type="button" class="secondary" onClick={() => { if (confirm(a("changeKeyConfirm"))) setEditing(true); }}>{a("changeKey")}</button></div>
      </section>
    );
  }
  return (
    <form class="stack" aria-labelledby="audit-key-title" onSubmit={async (e) => {
      e.preventDefault();
      try {
        await auditor.pin(text);
        setError(null);
        setEditing(false);
        onPinned();
      } catch (err) {
        setError(a(err instanceof BadAuditKey ? "keyBad" : "error"));
      }
    }}>
      <h3 id="audit-key-title">{a("keyTitle")}</h3>
      <p id="audit-key-help">{a("keyHelp")}</p>
      <label>{a("keyInput")}<input type="text" name="audit-key" class="mono" spellcheck={false} autocomplete="off" aria-describedby="audit-key-help" value={text} onInput={(e) => setText(e.currentTarget.value)} /></label>
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      <div class="actions"><button type="submit">{a("pinKey")}</button></div>
    </form>
  );
}

function HeadPanel({ a, lang, head, busy }: { a: A; lang: Lang; head: HeadCheck | null; busy: boolean }) {
  if (busy) return <p role="status">{a("checking")}</p>;
  if (head === null) return <p role="alert" class="error">{a("error")}</p>;
  const prev: Record<string, string | number> = head.previous ? { size: head.previous.tree_size, time: auditTime(lang, head.previous.timestamp_ms) } : {};
  if (!head.ok) {
    const problem = head.problem ?? "bad_signature";
    const text = problem === "no_key" ? a("noKey") : problem === "no_head" ? a("noHead") : problem === "inconsistent" ? a("inconsistent", prev) : problem === "shrunk" ? a("shrunk", prev) : a("badSignature");
    return (
      <section class="verify failed" role="alert" data-testid="audit-verify" data-result="failed" data-problem={problem}>
        <h3>{a("failTitle")}</h3>
        <p>{text}</p>
      </section>
    );
  }
  const h = head.head!;
  return (
    <section class="verify ok" role="status" data-testid="audit-verify" data-result="ok">
      <p>{a("headOk", { size: h.tree_size, time: auditTime(lang, h.timestamp_ms) })}</p>
      <p>{head.previous ? a("headConsistent", prev) : a("headFirst")}</p>
    </section>
  );
}

function Events({ a, lang, auditor, onRecheck }: { a: A; lang: Lang; auditor: Auditor; onRecheck: () => Promise<void> }) {
  const [filter, setFilter] = useState<Filter>({});
  const [events, setEvents] = useState<AuditEvent[] | null>(null);
  const [next, setNext] = useState<number | null>(null);
  const [checks, setChecks] = useState<Map<number, EventCheck>>(new Map());
  const [chart, setChart] = useState<{ events: AuditEvent[] } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [, setNames] = useState(0);

  const verifyAll = async (list: AuditEvent[]): Promise<void> => {
    // Events logged after this visit's head need a newer one (checked like the first).
    const head = auditor.head;
    if (head !== null && list.some((e) => e.leafIndex !== null && e.leafIndex >= head.tree_size)) await onRecheck();
    const out = new Map<number, EventCheck>();
    for (const e of list) out.set(e.id, await auditor.checkEvent(e));
    setChecks(out);
  };
  const run = async (f: Filter, after = 0): Promise<void> => {
    try {
      const page = await auditor.query(f, after, PAGE);
      const list = after === 0 ? page.events : [...(events ?? []), ...page.events];
      setEvents(list);
      setChecks(new Map());
      setNext(page.next);
      setError(null);
      await auditor.resolve(list.flatMap(officialsOf), lang);
      setNames((n) => n + 1);
      await verifyAll(list);
      // The chart covers more than one page: up to CHART_PAGES pages of 500.
      let all = page.events.length < PAGE ? list : [] as AuditEvent[];
      if (all.length === 0) {
        let cursor = 0;
        for (let i = 0; i < CHART_PAGES; i++) {
          const p = await auditor.query(f, cursor, 500);
          all = [...all, ...p.events];
          if (p.next === null) break;
          cursor = p.next;
        }
      }
      setChart({ events: all });
    } catch (e) {
      setError(errorText(a, e));
    }
  };

  const failed = (events ?? []).filter((e) => checks.get(e.id)?.state === "failed");
  const pending = (events ?? []).filter((e) => checks.get(e.id)?.state === "pending");
  const shownChecked = events !== null && checks.size === events.length;
  return (
    <>
      <FilterForm a={a} lang={lang} auditor={auditor} onQuery={(f) => { setFilter(f); void run(f); }} />
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {events !== null && shownChecked ? (
        failed.length > 0 ? (
          <section class="verify failed" role="alert" data-testid="audit-events-verify" data-result="failed">
            <h3>{a("failTitle")}</h3>
            <p>{a("eventsFailed", { n: failed.length, where: failed.map((e) => `#${e.id} (${a("leaf", { i: e.leafIndex ?? "-" })}, ${e.kind}, ${auditTime(lang, e.time)})`).join("; ") })}</p>
          </section>
        ) : (
          <section class="verify ok" role="status" data-testid="audit-events-verify" data-result={pending.length > 0 ? "pending" : "ok"}>
            <p>{a("eventsOk", { n: events.length - pending.length })}</p>
            {pending.length > 0 ? <p>{a("eventsPending", { n: pending.length })} <button type="button" class="secondary" onClick={() => void run(filter)}>{a("recheck")}</button></p> : null}
          </section>
        )
      ) : null}
      {events !== null && events.length === 0 ? <p>{a("noEvents")}</p> : null}
      {events !== null && events.length > 0 ? <EventTable a={a} lang={lang} auditor={auditor} events={events} checks={checks} /> : null}
      {next !== null ? <button type="button" class="secondary" onClick={() => void run(filter, next)}>{a("more")}</button> : null}
      {chart !== null && chart.events.length > 0 ? <Chart a={a} lang={lang} events={chart.events} /> : null}
      {events !== null ? <Export key={`${events[0]?.id ?? 0}-${events.length}`} a={a} auditor={auditor} events={events} /> : null}
    </>
  );
}

function Chart({ a, lang, events }: { a: A; lang: Lang; events: AuditEvent[] }) {
  const data = useMemo(() => perHour(events), [events]);
  return (
    <section class="stack">
      <h3>{a("chartTitle")}</h3>
      <HourChart lang={lang} hours={data.hours} series={data.series} label={a("chartTitle")} />
      <p class="status">{a("chartNote", { n: events.length })}</p>
    </section>
  );
}

function FilterForm({ a, lang, auditor, onQuery }: { a: A; lang: Lang; auditor: Auditor; onQuery: (f: Filter) => void }) {
  const [agencies, setAgencies] = useState<[string, { code: string; name: string }][]>([]);
  const [official, setOfficial] = useState<{ id: string; name: string } | null>(null);
  const [search, setSearch] = useState("");
  const [found, setFound] = useState<Frame[]>([]);
  const [devices, setDevices] = useState<Frame[]>([]);
  const [device, setDevice] = useState("");
  const [agency, setAgency] = useState("");
  const [kind, setKind] = useState("");
  const [since, setSince] = useState("");
  const [until, setUntil] = useState("");
  useEffect(() => { void auditor.agencyList(lang).then((m) => setAgencies([...m.entries()].sort((x, y) => x[1].code.localeCompare(y[1].code)))); }, [auditor]);
  useEffect(() => {
    setDevices([]);
    setDevice("");
    if (official === null) return;
    void auditor.devicesOf(official.id).then(setDevices);
  }, [official]);
  const families = [...new Set(KINDS.map((k) => k.split(".")[0]!))];
  return (
    <form class="stack" aria-label={a("filters")} onSubmit={(e) => {
      e.preventDefault();
      const f: Filter = {};
      if (official !== null) f.official = official.id;
      if (device !== "") f.device = device;
      if (agency !== "") f.agency = agency;
      if (kind !== "") f.kinds = kind.endsWith(".*") ? KINDS.filter((k) => k.startsWith(kind.slice(0, -1))) : [kind];
      if (since !== "") f.since = new Date(since).getTime();
      if (until !== "") f.until = new Date(until).getTime();
      onQuery(f);
    }}>
      <h3>{a("filters")}</h3>
      <div class="fields">
        <div class="stack">
          <span class="label">{a("official")}</span>
          {official !== null ? (
            <span class="actions"><span data-testid="audit-official">{official.name}</span><button type="button" class="secondary" onClick={() => setOfficial(null)}>{a("clear")}</button></span>
          ) : (
            <span class="actions">
              <input type="search" aria-label={a("pickOfficial")} placeholder={a("pickOfficial")} value={search} onInput={(e) => setSearch(e.currentTarget.value)}
                onKeyDown={async (e) => { if (e.key === "Enter") { e.preventDefault(); setFound(await auditor.findOfficials(search)); } }} />
              <button type="button" class="secondary" onClick={async () => setFound(await auditor.findOfficials(search))}>{a("pickOfficial")}</button>
            </span>
          )}
          {official === null && found.length > 0 ? (
            <ul class="list">
              {found.map((r) => {
                const name = String((lang === "en" ? r["name_en"] ?? r["name_th"] : r["name_th"] ?? r["name_en"]) ?? "");
                return <li key={String(r["official_id"])}><button type="button" class="row" onClick={() => { setOfficial({ id: String(r["official_id"]), name: `${name} (${String(r["agency_code"])})` }); setFound([]); }}>{name} <span class="status">{String(r["agency_code"])}</span></button></li>;
              })}
            </ul>
          ) : null}
        </div>
        <label>{a("device")}
          <select value={device} onChange={(e) => setDevice(e.currentTarget.value)} disabled={devices.length === 0}>
            <option value="">{a("anyDevice")}</option>
            {devices.map((d) => <option key={String(d["device_id"])} value={String(d["device_id"])}>{String(d["name"])} ({String(d["platform"])}, {String(d["device_id"]).slice(0, 8)})</option>)}
          </select>
        </label>
        <label>{a("agency")}
          <select name="agency" value={agency} onChange={(e) => setAgency(e.currentTarget.value)}>
            <option value="">{a("anyAgency")}</option>
            {agencies.map(([id, ag]) => <option key={id} value={id}>{ag.code} {ag.name}</option>)}
          </select>
        </label>
        <label>{a("kind")}
          <select name="kind" value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
            <option value="">{a("anyKind")}</option>
            {families.map((fam) => (
              <optgroup key={fam} label={fam}>
                <option value={`${fam}.*`}>{fam}.*</option>
                {KINDS.filter((k) => k.startsWith(`${fam}.`)).map((k) => <option key={k} value={k}>{k}</option>)}
              </optgroup>
            ))}
          </select>
        </label>
        <label>{a("since")}<input type="datetime-local" name="since" value={since} onInput={(e) => setSince(e.currentTarget.value)} /></label>
        <label>{a("until")}<input type="datetime-local" name="until" value={until} onInput={(e) => setUntil(e.currentTarget.value)} /></label>
      </div>
      <div class="actions"><button type="submit">{a("query")}</button></div>
    </form>
  );
}

/** What an auditor's request was, in words, beside its kind. */
function requestLabel(a: A, kind: string): string {
  const key = `req_${kind.replace(/^audit\./, "")}`;
  return isAuditKey(key) ? a(key) : "";
}

function Who({ auditor, id, device }: { auditor: Auditor; id: string | undefined; device?: string | undefined }) {
  if (id === undefined) return device ? <span class="mono fine">{device.slice(0, 8)}</span> : null;
  const o = auditor.official(id);
  return (
    <span data-official={id}>
      {o !== null && o.name ? <span class="who">{o.name}</span> : null}
      {o !== null && o.agency ? <span class="agency-code"> {o.agency}</span> : null}
      <span class="mono fine"> {id.slice(0, 8)}</span>
      {device ? <span class="fine" data-device={device}> · {auditor.deviceName(device) ?? ""} <span class="mono">{device.slice(0, 8)}</span></span> : null}
    </span>
  );
}

function EventTable({ a, lang, auditor, events, checks }: { a: A; lang: Lang; auditor: Auditor; events: AuditEvent[]; checks: Map<number, EventCheck> }) {
  const [agencies, setAgencies] = useState<Map<string, { code: string; name: string }>>(new Map());
  useEffect(() => { void auditor.agencyList(lang).then(setAgencies); }, [auditor]);
  return (
    <div class="table-wrap">
      <table class="events" data-testid="audit-events">
        <thead><tr><th scope="col">{a("colTime")}</th><th scope="col">{a("colKind")}</th><th scope="col">{a("colBy")}</th><th scope="col">{a("colAbout")}</th><th scope="col">{a("colAgency")}</th><th scope="col">{a("colDetails")}</th><th scope="col">{a("colCheck")}</th></tr></thead>
        <tbody>
          {events.map((e) => {
            const c = checks.get(e.id);
            const mark = c === undefined ? "" : c.state === "verified" ? a("verifiedMark") : c.state === "pending" ? a("pendingMark") : c.reason === "altered" ? a("alteredMark") : c.reason === "bad_head" ? a("badHeadMark") : a("noProofMark");
            const ag = e.fields.agency !== undefined ? agencies.get(e.fields.agency) : undefined;
            const details = Object.entries(e.fields.details ?? {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
            return (
              <tr key={e.id} data-testid="audit-event" data-event-id={e.id} data-leaf={e.leafIndex ?? ""} data-check={c?.state ?? ""} class={c?.state === "failed" ? "bad" : ""}>
                <td>{auditTime(lang, e.time)}</td>
                <td>{requestLabel(a, e.kind)} <span class="mono fine">{e.kind}</span></td>
                <td><Who auditor={auditor} id={e.fields.actor_official} device={e.fields.actor_device} /></td>
                <td><Who auditor={auditor} id={e.fields.subject_official} device={e.fields.subject_device} /></td>
                <td>{ag ? <span title={ag.name}>{ag.code}</span> : e.fields.agency ? <span class="mono fine">{e.fields.agency.slice(0, 8)}</span> : ""}</td>
                <td class="details">{details}</td>
                <td class="check" title={e.leafIndex !== null ? a("leaf", { i: e.leafIndex }) : ""}>{mark}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

function Export({ a, auditor, events }: { a: A; auditor: Auditor; events: AuditEvent[] }) {
  const leaves = events.map((e) => e.leafIndex).filter((i): i is number => i !== null);
  const [start, setStart] = useState(leaves.length ? String(Math.min(...leaves)) : "0");
  const [end, setEnd] = useState(leaves.length ? String(Math.max(...leaves) + 1) : "");
  const [status, setStatus] = useState<string | null>(null);
  return (
    <form class="stack" aria-labelledby="audit-export-title" onSubmit={async (e) => {
      e.preventDefault();
      try {
        const s = Number(start);
        const lines = await auditor.exportRange(s, end === "" ? null : Number(end), (n) => setStatus(a("exporting", { n })));
        const file = `gchat-audit-${s}-${end || "end"}.jsonl`;
        const url = URL.createObjectURL(new Blob([lines.map((l) => `${l}\n`).join("")], { type: "application/x-ndjson" }));
        const link = document.createElement("a");
        link.href = url;
        link.download = file;
        link.click();
        setTimeout(() => URL.revokeObjectURL(url), 10_000);
        setStatus(a("exported", { n: lines.length, file }));
      } catch (err) {
        setStatus(errorText(a, err));
      }
    }}>
      <h3 id="audit-export-title">{a("exportTitle")}</h3>
      <p>{a("exportHelp")}</p>
      <div class="actions">
        <label>{a("exportStart")}<input type="number" min="0" name="export-start" value={start} onInput={(e) => setStart(e.currentTarget.value)} /></label>
        <label>{a("exportEnd")}<input type="number" min="1" name="export-end" value={end} onInput={(e) => setEnd(e.currentTarget.value)} /></label>
      </div>
      <div class="actions"><button type="submit">{a("exportRun")}</button></div>
      {status !== null ? <p role="status" data-testid="audit-export-status">{status}</p> : null}
    </form>
  );
}

/** Access transparency, for every official: the auditors' requests about my records. */
export function AccessesView({ lang, device, onBack, backLabel }: { lang: Lang; device: Device; onBack: () => void; backLabel: string }) {
  const a = auditT(lang);
  const auditor = useMemo(() => new Auditor((f) => device.call(f), device.store), [device]);
  const [events, setEvents] = useState<AuditEvent[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void (async () => {
      try {
        const page = await auditor.accesses(lang);
        setEvents(page.events);
      } catch (e) {
        setError(errorText(a, e));
      }
    })();
  }, [auditor]);
  return (
    <main class="audit" data-testid="accesses-view">
      <button type="button" class="secondary" onClick={onBack}>{backLabel}</button>
      <h2>{a("accessesTitle")}</h2>
      <p>{a("accessesHelp")}</p>
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {events !== null && events.length === 0 ? <p>{a("noAccesses")}</p> : null}
      {events !== null && events.length > 0 ? (
        <table class="events" data-testid="accesses">
          <thead><tr><th scope="col">{a("colTime")}</th><th scope="col">{a("colAuditor")}</th><th scope="col">{a("colRequest")}</th></tr></thead>
          <tbody>
            {events.map((e) => (
              <tr key={e.id} data-testid="access">
                <td>{auditTime(lang, e.time)}</td>
                <td><Who auditor={auditor} id={e.fields.actor_official} device={e.fields.actor_device} /></td>
                <td>{requestLabel(a, e.kind)} <span class="mono fine">{e.kind}</span></td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </main>
  );
}
