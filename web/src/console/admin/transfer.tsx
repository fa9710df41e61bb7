/** HR import (CSV: dry run, then all or nothing) and export (CSV for Excel, JSON), for agency admins and superadmins. */
import { useEffect, useRef, useState } from "preact/hooks";
import type { Device } from "../../client";
import type { Lang } from "../../i18n";
import { translator } from "../strings";
import { explain, listAgencies, officialsPage, type Official } from "./api";
import { chunks, columnOf, csvHeader, csvRows, ImportFileError, readImport, type Encoding, type HrFile } from "./hrcsv";
import type { AT } from "./strings";

const S = {
  th: {
    importTitle: "นำเข้าเจ้าหน้าที่จากไฟล์ CSV ของฝ่ายบุคคล",
    importHelp: "คอลัมน์: employee_id, name_th และ/หรือ name_en, position, agency_code, email, phone (UTF-8 หรือ TIS-620) ตรวจสอบก่อนเสมอ นำเข้าได้เมื่อไม่มีปัญหาเลย และนำเข้าทั้งหมดหรือไม่นำเข้าเลย",
    file: "ไฟล์ CSV",
    encoding: "การเข้ารหัสอักขระ",
    auto: "ตรวจหาอัตโนมัติ",
    update: "ปรับปรุงเจ้าหน้าที่ที่มีอยู่แล้วตามรหัสพนักงาน",
    readAs: "อ่านเป็น {encoding}: {rows} แถว",
    ignored: "ไม่ใช้คอลัมน์: {cols}",
    skipped: "ข้าม {n} แถวที่ส่งออกไปโดยไม่มีรหัสพนักงาน",
    check: "ตรวจสอบ (ยังไม่เปลี่ยนแปลงข้อมูล)",
    apply: "นำเข้าทั้งหมด",
    staging: "กำลังส่งแถวให้ตรวจ {done} จาก {total}",
    checking: "กำลังตรวจทุกแถว…",
    applying: "กำลังนำเข้า {total} แถวในครั้งเดียว…",
    clean: "ไฟล์ไม่มีปัญหา: {rows} แถว จะสร้างใหม่ {created} ปรับปรุง {updated} ไม่เปลี่ยน {unchanged}",
    problems: "พบ {count} ปัญหาใน {bad} แถว จาก {rows} แถว: แก้ไขไฟล์แล้วเลือกใหม่ ยังไม่มีการเปลี่ยนแปลงใดๆ",
    more: "และอีก {n} ปัญหา",
    refused: "ไม่ได้นำเข้า: ไฟล์มีปัญหา ไม่มีการเปลี่ยนแปลงใดๆ",
    applied: "นำเข้าแล้ว: สร้างใหม่ {created} คน ปรับปรุง {updated} คน",
    line: "บรรทัด",
    column: "คอลัมน์",
    problem: "ปัญหา",
    fieldCount: "แถวนี้มี {detail} ช่อง (แถวนี้/หัวตาราง)",
    control: "มีอักขระควบคุม {detail} (ขึ้นบรรทัดใหม่ในช่องเดียวกัน?)",
    notEncoding: "ไฟล์ไม่ใช่ {found}: บรรทัด {line} มีไบต์ที่ไม่มีในการเข้ารหัสนี้",
    damagedUtf8: "ไฟล์เป็น UTF-8 แต่บรรทัด {line} มีอักขระเสีย แก้บรรทัดนั้น หรือเลือกการเข้ารหัสเอง",
    neither: "ไฟล์ไม่ใช่ทั้ง UTF-8 และ TIS-620: บรรทัด {line} มีไบต์ 0x{byte} บันทึกไฟล์เป็น UTF-8",
    csv: "บรรทัด {line} อ่านเป็น CSV ไม่ได้ ({message})",
    header: "บรรทัดแรกต้องเป็นชื่อคอลัมน์ employee_id, agency_code และ name_th และ/หรือ name_en (พบ: {found}; อ่านเป็น {message})",
    exportTitle: "ส่งออกรายชื่อเจ้าหน้าที่",
    exportHelp: "CSV เปิดด้วย Excel ได้ (UTF-8 มี BOM; ช่องที่ขึ้นต้นด้วย = + - @ ถูกทำให้เป็นข้อความ) และนำเข้ากลับได้ด้วยการปรับปรุงตามรหัสพนักงาน JSON มีหน่วยงานและเจ้าหน้าที่ทั้งหมด",
    exportCsv: "ส่งออก CSV",
    exportJson: "ส่งออก JSON",
    exporting: "กำลังอ่านรายชื่อ…",
    exportingCount: "เขียนลงไฟล์แล้ว {n} คน…",
    exported: "ส่งออก {officials} คน {agencies} หน่วยงาน",
    p_too_long: "ยาวเกิน 200 ตัวอักษร",
    p_bad_text: "มีอักขระที่ใช้ไม่ได้ (อักขระควบคุมหรืออักขระที่มองไม่เห็น)",
    p_not_email: "\"{value}\" ไม่ใช่ที่อยู่อีเมล",
    p_not_phone: "\"{value}\" ไม่ใช่หมายเลขโทรศัพท์",
    p_bad_employee_id: "รหัสพนักงานมีได้เฉพาะตัวอักษร ตัวเลข และ _ . / - ไม่เกิน 64 ตัว",
    p_no_thai: "ชื่อภาษาไทยไม่มีอักษรไทย",
    p_missing: "ว่างอยู่ ต้องกรอก",
    p_repeated: "รหัสพนักงาน {value} ซ้ำกับบรรทัด {ref}",
    p_exists: "รหัสพนักงาน {value} มีในระบบแล้ว (เลือก \"ปรับปรุงเจ้าหน้าที่ที่มีอยู่แล้ว\" เพื่อแก้ไขข้อมูลเดิม)",
    p_outside_scope: "\"{value}\" อยู่นอกขอบเขตที่คุณดูแล",
    p_retired: "รหัสพนักงาน {value} เป็นของเจ้าหน้าที่ที่พ้นจากราชการแล้ว",
    p_no_name: "ไม่มีทั้งชื่อภาษาไทยและภาษาอังกฤษ",
    p_unknown_agency: "ไม่มีหน่วยงานรหัส {value}",
  },
  en: {
    importTitle: "Import officials from an HR CSV file",
    importHelp: "Columns: employee_id, name_th and/or name_en, position, agency_code, email, phone (UTF-8 or TIS-620). Always checked first; applied only when nothing is wrong, all rows or none.",
    file: "CSV file",
    encoding: "Character encoding",
    auto: "Detect",
    update: "Update officials already in the directory by employee id",
    readAs: "Read as {encoding}: {rows} rows",
    ignored: "Columns not used: {cols}",
    skipped: "Passing over {n} exported rows without an employee id",
    check: "Check (changes nothing)",
    apply: "Import all",
    staging: "Sending rows to be checked: {done} of {total}",
    checking: "Checking every row…",
    applying: "Importing {total} rows at once…",
    clean: "The file is clean: {rows} rows; would create {created}, update {updated}, leave {unchanged}",
    problems: "{count} problems in {bad} of {rows} rows: fix the file and choose it again. Nothing was changed.",
    more: "and {n} more",
    refused: "Not imported: the file has problems; nothing was changed",
    applied: "Imported: {created} created, {updated} updated",
    line: "Line",
    column: "Column",
    problem: "Problem",
    fieldCount: "the row has {detail} fields (row/header)",
    control: "contains the control character {detail} (a line break inside a cell?)",
    notEncoding: "The file is not {found}: line {line} has a byte that encoding does not have",
    damagedUtf8: "The file is UTF-8 but line {line} has a damaged character: fix that line, or choose the encoding",
    neither: "The file is neither UTF-8 nor TIS-620: line {line} has the byte 0x{byte}; save it as UTF-8",
    csv: "Line {line} is not valid CSV ({message})",
    header: "The first line must name the columns employee_id, agency_code and name_th and/or name_en (found: {found}; read as {message})",
    exportTitle: "Export officials",
    exportHelp: "CSV opens in Excel (UTF-8 with BOM; cells starting with = + - @ are made text) and imports again as an update by employee id. JSON has every agency and official.",
    exportCsv: "Export CSV",
    exportJson: "Export JSON",
    exporting: "Reading the directory…",
    exportingCount: "{n} officials written to the file…",
    exported: "Exported {officials} officials and {agencies} agencies",
    p_too_long: "longer than 200 characters",
    p_bad_text: "has characters that are not allowed (control or invisible characters)",
    p_not_email: "\"{value}\" is not an email address",
    p_not_phone: "\"{value}\" is not a phone number",
    p_bad_employee_id: "an employee id holds only letters, digits and _ . / -, at most 64",
    p_no_thai: "the Thai name has no Thai characters",
    p_missing: "is empty; it is required",
    p_repeated: "employee id {value} repeats line {ref}",
    p_exists: "employee id {value} is already in the directory (tick \"Update officials already in the directory\" to change them)",
    p_outside_scope: "\"{value}\" is outside your scope",
    p_retired: "employee id {value} belongs to a retired official",
    p_no_name: "has neither a Thai nor an English name",
    p_unknown_agency: "no agency with code {value}",
  },
};
type K = keyof typeof S.th;

/** A problem as shown: worded at each render, so it follows the language chosen. */
interface Problem { line: number; column: string; key: K | null; vars: Record<string, string | number>; raw: string }
/** A node's row error (PROTOCOL.md "Import problems"): worded here from its stable code. */
interface RowError { line: number; field: string; reason: string; code?: string; ref_line?: number | null }
interface Result { rows: number; created: number; updated: number; unchanged: number; error_count: number; bad_rows: number; errors: RowError[]; applied: boolean }

/** The node's problem as a key of this app's tables; its English sentence only for a code this app does not know. */
function nodeProblem(hr: HrFile, byLine: Map<number, Record<string, unknown>>, e: RowError): Problem {
  const key = `p_${e.code ?? ""}`;
  const row = byLine.get(e.line);
  const vars = { value: String(row?.[e.field] ?? ""), ref: e.ref_line ?? "" };
  return { line: e.line, column: columnOf(hr.header, e.field), key: key in S.th ? key as K : null, vars, raw: e.reason };
}
type Phase = { name: "idle" } | { name: "staging"; done: number; total: number } | { name: "checking" } | { name: "applying"; total: number };

export function ImportView({ lang, device, t: at }: { t: AT; lang: Lang; device: Device }) {
  const t = translator(S, lang);
  const [encoding, setEncoding] = useState<Encoding | "">("");
  const [update, setUpdate] = useState(false);
  const [file, setFile] = useState<{ name: string; raw: Uint8Array } | null>(null);
  const [hr, setHr] = useState<HrFile | null>(null);
  const [phase, setPhase] = useState<Phase>({ name: "idle" });
  const [result, setResult] = useState<Result | null>(null);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [importId, setImportId] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const staged = useRef<string | null>(null);
  staged.current = importId;

  const discard = (): void => {
    if (staged.current !== null) void device.call({ type: "import_discard", import_id: staged.current }).catch(() => undefined);
    setImportId(null);
  };
  useEffect(() => discard, []); // leaving the screen drops what was staged
  useEffect(() => {
    discard();
    setHr(null); setResult(null); setProblems([]); setError(null); setDone(null);
    if (file === null) return;
    try { setHr(readImport(file.raw, encoding || undefined)); } catch (e) {
      if (e instanceof ImportFileError) setError(t(e.reason as K, { line: e.detail.line ?? "", found: e.detail.found ?? "", message: e.detail.message ?? "", byte: (e.detail.byte ?? 0).toString(16) }));
      else setError(t("csv", { line: "?", message: String(e) }));
    }
  }, [file, encoding, update]);

  const check = async (): Promise<void> => {
    if (hr === null) return;
    setError(null); setResult(null); setDone(null);
    discard();
    const byLine = new Map(hr.rows.map((r) => [r.line, r as Record<string, unknown>]));
    const word = (e: RowError): Problem => nodeProblem(hr, byLine, e);
    const local: Problem[] = hr.problems.map((p) => ({ line: p.line, column: p.field ? columnOf(hr.header, p.field) : "", key: p.reason, vars: { detail: p.detail }, raw: "" }));
    try {
      const id = String((await device.call({ type: "import_begin" }))["import_id"]);
      setImportId(id);
      staged.current = id;
      let sent = 0;
      const seen: Problem[] = [];
      setPhase({ name: "staging", done: 0, total: hr.rows.length });
      for (const chunk of chunks(hr.rows)) {
        const reply = await device.call({ type: "import_rows", import_id: id, rows: chunk, update });
        for (const e of reply["errors"] as Result["errors"]) seen.push(word(e));
        sent += chunk.length;
        setPhase({ name: "staging", done: sent, total: hr.rows.length });
      }
      setPhase({ name: "checking" });
      const r = (await device.call({ type: "import_apply", import_id: id, dry_run: true, update })) as unknown as Result;
      const server = r.error_count > 0 && r.errors.length > seen.length ? r.errors.map(word) : seen;
      setProblems([...local, ...server].sort((a, b) => a.line - b.line));
      setResult({ ...r, rows: r.rows + new Set(hr.problems.map((p) => p.line)).size, error_count: r.error_count + hr.problems.length, bad_rows: r.bad_rows + new Set(hr.problems.map((p) => p.line)).size });
    } catch (e) { setError(explain(at, e)); } finally { setPhase({ name: "idle" }); }
  };

  const apply = async (): Promise<void> => {
    if (importId === null || hr === null) return;
    setError(null);
    setPhase({ name: "applying", total: hr.rows.length });
    try {
      const r = (await device.call({ type: "import_apply", import_id: importId, dry_run: false, update })) as unknown as Result;
      setImportId(null); // applied or not, the node has ended this import
      staged.current = null;
      if (r.applied) { setDone(t("applied", { created: r.created, updated: r.updated })); setResult(null); }
      else { setError(t("refused")); const byLine = new Map(hr.rows.map((x) => [x.line, x as Record<string, unknown>]));
        setProblems(r.errors.map((e) => nodeProblem(hr, byLine, e))); }
    } catch (e) { setError(explain(at, e)); } finally { setPhase({ name: "idle" }); }
  };

  const clean = result !== null && result.error_count === 0;
  return (
    <section class="stack" aria-labelledby="import-h">
      <h3 id="import-h">{t("importTitle")}</h3>
      <p class="status">{t("importHelp")}</p>
      <div class="filters">
        <label class="grow">{t("file")}<input type="file" name="file" accept=".csv,text/csv" onChange={async (e) => {
          const f = e.currentTarget.files?.[0];
          setFile(f ? { name: f.name, raw: new Uint8Array(await f.arrayBuffer()) } : null);
        }} /></label>
        <label>{t("encoding")}
          <select name="encoding" value={encoding} onChange={(e) => setEncoding(e.currentTarget.value as Encoding | "")}>
            <option value="">{t("auto")}</option><option value="utf-8">UTF-8</option><option value="windows-874">TIS-620 (cp874)</option>
          </select>
        </label>
        <label class="inline"><input type="checkbox" name="update" checked={update} onChange={(e) => setUpdate(e.currentTarget.checked)} />{t("update")}</label>
      </div>
      {hr !== null ? (
        <p data-testid="import-read">{t("readAs", { encoding: hr.encoding, rows: hr.rows.length + new Set(hr.problems.map((p) => p.line)).size })}
          {hr.ignored.length > 0 ? ` · ${t("ignored", { cols: hr.ignored.join(", ") })}` : ""}{hr.skipped > 0 ? ` · ${t("skipped", { n: hr.skipped })}` : ""}</p>
      ) : null}
      <div class="actions">
        <button type="button" disabled={hr === null || phase.name !== "idle"} onClick={check}>{t("check")}</button>
        <button type="button" class="primary-strong" disabled={!clean || importId === null || phase.name !== "idle"} onClick={apply} data-import-id={importId ?? ""}>{t("apply")}</button>
      </div>
      <Progress t={t} phase={phase} />
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
      {done !== null ? <p role="status" data-testid="import-done">{done}</p> : null}
      {result !== null ? (
        <p data-testid="import-summary" class={clean ? "" : "error"}>{clean
          ? t("clean", { rows: result.rows, created: result.created, updated: result.updated, unchanged: result.unchanged })
          : t("problems", { count: result.error_count, bad: result.bad_rows, rows: result.rows })}</p>
      ) : null}
      {problems.length > 0 ? (
        <>
          <table class="grid" data-testid="import-problems">
            <thead><tr><th>{t("line")}</th><th>{t("column")}</th><th>{t("problem")}</th></tr></thead>
            <tbody>{problems.map((p, i) => <tr key={i} data-line={p.line}><td>{p.line}</td><td>{p.column}</td><td>{p.key !== null ? t(p.key, p.vars) : p.raw}</td></tr>)}</tbody>
          </table>
          {result !== null && result.error_count > problems.length ? <p>{t("more", { n: result.error_count - problems.length })}</p> : null}
        </>
      ) : null}
    </section>
  );
}

function Progress({ t, phase }: { t: (k: K, v?: Record<string, string | number>) => string; phase: Phase }) {
  if (phase.name === "idle") return null;
  const label = phase.name === "staging" ? t("staging", { done: phase.done, total: phase.total }) : phase.name === "checking" ? t("checking") : t("applying", { total: phase.total });
  return (
    <div class="stack" data-testid="import-progress" data-phase={phase.name}>
      {phase.name === "staging" ? <progress max={Math.max(phase.total, 1)} value={phase.done} aria-label={label} /> : <progress aria-label={label} />}
      <span class="status" role="status">{label}</span>
    </div>
  );
}

/** roles_text of the CLI: roles beyond `official`, scopes by agency code (`agency_admin@MOI,auditor`). */
function rolesText(o: Official, codes: Map<string, string>): string {
  return o.roles.filter((r) => r.role !== "official").map((r) => r.role + (r.scope_agency_id === null ? "" : "@" + (codes.get(r.scope_agency_id) ?? r.scope_agency_id))).join(",");
}

/** Where an export goes, a page at a time. */
interface Sink { write(text: string): Promise<void>; close(): Promise<void>; abort(): Promise<void> }

interface SavePicker { (options: { suggestedName: string; types: { description: string; accept: Record<string, string[]> }[] }): Promise<{ createWritable(): Promise<{ write(data: string): Promise<void>; close(): Promise<void>; abort(): Promise<void> }> }> }

/**
 * The export's destination. Where the browser has the File System Access
 * API (Chromium), the file the admin chooses, each page written as it
 * arrives: nothing of the directory stays in memory. Elsewhere, each page
 * becomes a Blob at once and the download is a Blob of those parts: the
 * page's script holds one page at a time, and the browser keeps the parts
 * (Chromium spills big ones to disk). Null: the admin cancelled the choice.
 */
async function openSink(name: string, type: string, ext: string): Promise<Sink | null> {
  const picker = (window as unknown as { showSaveFilePicker?: SavePicker }).showSaveFilePicker;
  if (typeof picker === "function") {
    let handle;
    try {
      handle = await picker({ suggestedName: name, types: [{ description: name, accept: { [type.split(";")[0] ?? type]: [ext] } }] });
    } catch (e) {
      if (e instanceof DOMException && e.name === "AbortError") return null;
      throw e;
    }
    const file = await handle.createWritable();
    return { write: (text) => file.write(text), close: () => file.close(), abort: () => file.abort() };
  }
  const parts: Blob[] = [];
  return {
    write: async (text) => { parts.push(new Blob([text])); },
    close: async () => {
      const url = URL.createObjectURL(new Blob(parts, { type }));
      parts.length = 0;
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    },
    abort: async () => { parts.length = 0; },
  };
}

const EXPORT_PAGE = 500;

export function ExportView({ lang, device, t: at }: { t: AT; lang: Lang; device: Device }) {
  const t = translator(S, lang);
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState(0); // exports finished on this screen (a test waits on it)
  const run = async (format: "csv" | "json"): Promise<void> => {
    const stamp = new Date().toISOString().slice(0, 10);
    setError(null);
    // The file is chosen first, while the click still counts as the admin's gesture.
    let sink: Sink | null;
    try {
      sink = format === "csv"
        ? await openSink(`officials-${stamp}.csv`, "text/csv;charset=utf-8", ".csv")
        : await openSink(`directory-${stamp}.json`, "application/json", ".json");
    } catch (e) { setError(explain(at, e)); return; }
    if (sink === null) return;
    setBusy(true); setNote(t("exporting"));
    let count = 0;
    try {
      const agencies = await listAgencies(device);
      const codes = new Map(agencies.map((a) => [a.id, a.code]));
      await sink.write(format === "csv" ? csvHeader() : `{\n "agencies": ${JSON.stringify(agencies)},\n "officials": [`);
      let after: string | null = null;
      do {
        const page = await officialsPage(device, { agency: null, status: null, after, limit: EXPORT_PAGE });
        if (format === "csv") await sink.write(csvRows(page.officials, page.officials.map((o) => rolesText(o, codes))));
        else await sink.write(page.officials.map((o, i) => (count + i === 0 ? "\n  " : ",\n  ") + JSON.stringify(o)).join(""));
        count += page.officials.length;
        after = page.next;
        setNote(t("exportingCount", { n: count }));
      } while (after !== null);
      if (format === "json") await sink.write("\n ]\n}\n");
      await sink.close();
      setNote(t("exported", { officials: count, agencies: agencies.length }));
      setDone((n) => n + 1);
    } catch (e) {
      await sink.abort().catch(() => undefined);
      setNote(null); setError(explain(at, e));
    } finally { setBusy(false); }
  };
  return (
    <section class="stack" aria-labelledby="export-h">
      <h3 id="export-h">{t("exportTitle")}</h3>
      <p class="status">{t("exportHelp")}</p>
      <div class="actions">
        <button type="button" disabled={busy} onClick={() => run("csv")}>{t("exportCsv")}</button>
        <button type="button" class="secondary" disabled={busy} onClick={() => run("json")}>{t("exportJson")}</button>
      </div>
      {note !== null ? <p role="status" data-testid="export-note" data-done={done}>{note}</p> : null}
      {error !== null ? <p role="alert" class="error">{error}</p> : null}
    </section>
  );
}
