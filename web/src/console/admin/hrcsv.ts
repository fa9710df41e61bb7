/**
 * The HR CSV file in the browser, by the rules of gchat/client/hr_csv.py
 * (the CLI's reader and writer; the same file reads the same way in both):
 *
 * - Encoding: UTF-8 (a byte-order mark is dropped), else TIS-620 / Windows
 *   code page 874 (what Thai HR systems and Excel on Thai Windows save),
 *   unless the file's Thai looks like damaged UTF-8; a byte that fits
 *   neither is reported with its line, never turned into the wrong letters.
 * - Problems are named by file line and column (Excel's letter and the
 *   header name); a row with a problem found here is not sent.
 * - Export: a UTF-8 byte-order mark (or Excel shows Thai as garbage), the
 *   import's columns first (so an export imports again), CRLF, and every
 *   cell that starts with `= + - @`, a tab or a carriage return prefixed
 *   with an apostrophe (CSV injection: a spreadsheet would run it as a
 *   formula); the import removes exactly that prefix again.
 */

export const IMPORT_COLUMNS = ["employee_id", "name_th", "name_en", "position", "agency_code", "email", "phone"] as const;
export const EXPORT_ONLY_COLUMNS = ["status", "roles", "official_id"] as const;
export type Column = (typeof IMPORT_COLUMNS)[number];
export type ImportRow = { line: number } & Partial<Record<Column, string | null>>;

/** protocol/limits.py: rows per import_rows frame, characters per cell on the wire. */
export const MAX_IMPORT_ROWS = 500;
export const MAX_IMPORT_TEXT = 1000;
/** Keep each import frame well under the protocol's frame limit (as the CLI does). */
export const CHUNK_BYTES = 160 * 1024;

const BOM = "\ufeff";
const FORMULA_START = ["=", "+", "-", "@", "\t", "\r"];

export type Encoding = "utf-8" | "windows-874";

/** Why a file cannot be read as an import at all (the reader says which line and why). */
export class ImportFileError extends Error {
  constructor(readonly reason: "notEncoding" | "damagedUtf8" | "neither" | "csv" | "header", readonly detail: { line?: number; byte?: number; found?: string; message?: string } = {}) {
    super(reason);
  }
}

/** A problem with one row found before sending (the row is not sent). */
export interface LocalProblem { line: number; field: string; reason: "fieldCount" | "control"; detail: string }

export interface HrFile {
  rows: ImportRow[];
  header: string[];
  encoding: "UTF-8" | "UTF-8 (with BOM)" | "TIS-620 (cp874)" | Encoding;
  ignored: string[];
  problems: LocalProblem[];
  skipped: number;
}

const lineOf = (raw: Uint8Array, position: number): number => {
  let n = 1;
  for (let i = 0; i < position && i < raw.length; i++) if (raw[i] === 0x0a) n++;
  return n;
};

/** The first byte position where `raw` stops being valid in `encoding` (the line it is on, for the message). */
function firstBad(raw: Uint8Array, encoding: Encoding): number {
  if (encoding === "windows-874") {
    const at = raw.findIndex((b) => CP874_UNDEFINED.has(b));
    if (at >= 0) return at;
  }
  let start = 0;
  for (let i = 0; i <= raw.length; i++) {
    if (i === raw.length || raw[i] === 0x0a) {
      if (tryDecode(raw.subarray(start, i), encoding) === null) return start;
      start = i + 1;
    }
  }
  return raw.length;
}

/**
 * Bytes TIS-620 / code page 874 leaves undefined. The WHATWG decoder maps
 * them to C1 controls and private-use characters instead of failing;
 * Python's cp874 (the CLI) refuses them, and so does this reader.
 */
const CP874_UNDEFINED = new Set([0x81, 0x82, 0x83, 0x84, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f, 0x90, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xdb, 0xdc, 0xdd, 0xde, 0xfc, 0xfd, 0xfe, 0xff]);

function tryDecode(raw: Uint8Array, encoding: Encoding): string | null {
  if (encoding === "windows-874" && raw.some((b) => CP874_UNDEFINED.has(b))) return null;
  try { return new TextDecoder(encoding, { fatal: true, ignoreBOM: true }).decode(raw); } catch { return null; }
}

/** (text, what it was read as); `encoding` forces one. */
export function decode(raw: Uint8Array, encoding?: Encoding): { text: string; encoding: HrFile["encoding"] } {
  if (encoding !== undefined) {
    const text = tryDecode(raw, encoding);
    if (text === null) { const at = firstBad(raw, encoding); throw new ImportFileError("notEncoding", { line: lineOf(raw, at), found: encoding }); }
    return { text: text.startsWith(BOM) ? text.slice(1) : text, encoding };
  }
  let label: HrFile["encoding"] = "UTF-8";
  if (raw[0] === 0xef && raw[1] === 0xbb && raw[2] === 0xbf) { raw = raw.subarray(3); label = "UTF-8 (with BOM)"; }
  const utf8 = tryDecode(raw, "utf-8");
  if (utf8 !== null) return { text: utf8, encoding: label };
  let high = 0;
  let thaiUtf8 = 0;
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i]!;
    if (b >= 0x80) high++;
    if (b === 0xe0 && (raw[i + 1] === 0xb8 || raw[i + 1] === 0xb9) && raw[i + 2] !== undefined && raw[i + 2]! >= 0x80 && raw[i + 2]! <= 0xbf) thaiUtf8 += 3;
  }
  if (label !== "UTF-8" || thaiUtf8 * 2 > high) throw new ImportFileError("damagedUtf8", { line: lineOf(raw, firstBad(raw, "utf-8")) });
  const thai = tryDecode(raw, "windows-874");
  if (thai === null) { const at = firstBad(raw, "windows-874"); throw new ImportFileError("neither", { line: lineOf(raw, at), byte: raw[at] }); }
  return { text: thai, encoding: "TIS-620 (cp874)" };
}

/**
 * RFC 4180 records as Python's csv.reader(strict=True) reads them: quoted
 * fields may hold commas, quotes ("") and line breaks; anything after a
 * closing quote but a comma or the end of the line is an error. Each record
 * carries the file line it starts on.
 */
export function* records(text: string): Generator<{ line: number; cells: string[] }> {
  let i = 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    const start = line;
    const cells: string[] = [];
    let cell = "";
    let quoted = false;
    let wasQuoted = false;
    for (;;) {
      if (i >= n) {
        if (quoted) throw new ImportFileError("csv", { line: start, message: "unexpected end of data" });
        cells.push(cell);
        break;
      }
      const ch = text[i]!;
      if (quoted) {
        if (ch === '"') {
          if (text[i + 1] === '"') { cell += '"'; i += 2; continue; }
          quoted = false; wasQuoted = true; i++; continue;
        }
        if (ch === "\n") line++;
        cell += ch; i++; continue;
      }
      if (ch === ",") { cells.push(cell); cell = ""; wasQuoted = false; i++; continue; }
      if (ch === "\r" || ch === "\n") {
        cells.push(cell);
        i += ch === "\r" && text[i + 1] === "\n" ? 2 : 1;
        line++;
        break;
      }
      if (wasQuoted) throw new ImportFileError("csv", { line, message: "',' expected after '\"'" });
      if (ch === '"' && cell === "") { quoted = true; i++; continue; }
      cell += ch; i++;
    }
    yield { line: start, cells: cells.length === 1 && cells[0] === "" ? [] : cells };
  }
}

/** Undo the export's formula guard (an apostrophe before a formula character). */
export const unescapeCell = (v: string): string => (v.length > 1 && v[0] === "'" && FORMULA_START.includes(v[1]!) ? v.slice(1) : v);
/** A cell a spreadsheet shows as text, never runs as a formula. */
export const escapeCell = (v: string): string => (FORMULA_START.some((c) => v.startsWith(c)) ? "'" + v : v);

/** The first control character (Unicode Cc) in a value, as U+XXXX. */
function control(v: string): string | null {
  for (const ch of v) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return `U+${c.toString(16).toUpperCase().padStart(4, "0")}`;
  }
  return null;
}

/** Where a field is, as a person finds it in Excel: `C (name_th)`. */
export function columnOf(header: string[], name: string): string {
  const i = header.indexOf(name);
  if (i < 0) return name;
  let index = i + 1;
  let letters = "";
  while (index > 0) { const rest = (index - 1) % 26; letters = String.fromCharCode(65 + rest) + letters; index = Math.floor((index - 1) / 26); }
  return `${letters} (${name})`;
}

/** The rows of an HR CSV, numbered by the file line each starts on. */
export function readImport(raw: Uint8Array, encoding?: Encoding): HrFile {
  const { text, encoding: used } = decode(raw, encoding);
  const it = records(text);
  const first = it.next();
  const header = first.done ? [] : first.value.cells.map((h) => h.trim());
  const missing = ["employee_id", "agency_code"].filter((c) => !header.includes(c));
  if (missing.length > 0 || !(header.includes("name_th") || header.includes("name_en"))) {
    throw new ImportFileError("header", { found: header.join(", "), message: used });
  }
  const hr: HrFile = { rows: [], header, encoding: used, ignored: header.filter((h) => !(IMPORT_COLUMNS as readonly string[]).includes(h)), problems: [], skipped: 0 };
  const where = IMPORT_COLUMNS.filter((c) => header.includes(c)).map((c) => [c, header.indexOf(c)] as const);
  const exported = header.indexOf("official_id");
  for (const { line, cells } of it) {
    if (cells.length === 0 || cells.every((c) => c.trim() === "")) continue; // a blank line
    if (cells.length !== header.length) {
      hr.problems.push({ line, field: "", reason: "fieldCount", detail: `${cells.length}/${header.length}` });
      continue;
    }
    const row: ImportRow = { line };
    for (const [name, index] of where) {
      const value = unescapeCell(cells[index]!);
      row[name] = value.trim() !== "" ? [...value].slice(0, MAX_IMPORT_TEXT).join("") : null;
    }
    if ((row.employee_id ?? null) === null && exported >= 0 && cells[exported] !== "") { hr.skipped++; continue; }
    const bad = where.map(([name]) => [name, row[name] ? control(row[name]!) : null] as const).filter(([, c]) => c !== null);
    if (bad.length > 0) {
      for (const [name, c] of bad) hr.problems.push({ line, field: name, reason: "control", detail: c! });
      continue;
    }
    hr.rows.push(row);
  }
  return hr;
}

/** Rows in frames of at most MAX_IMPORT_ROWS rows and about CHUNK_BYTES. */
export function chunks(rows: ImportRow[]): ImportRow[][] {
  const out: ImportRow[][] = [];
  let chunk: ImportRow[] = [];
  let size = 0;
  const encoder = new TextEncoder();
  for (const row of rows) {
    const rowSize = encoder.encode(JSON.stringify(row)).length;
    if (chunk.length > 0 && (chunk.length >= MAX_IMPORT_ROWS || size + rowSize > CHUNK_BYTES)) { out.push(chunk); chunk = []; size = 0; }
    chunk.push(row);
    size += rowSize;
  }
  if (chunk.length > 0) out.push(chunk);
  return out;
}

/** One CSV field as Python's csv.writer (QUOTE_MINIMAL) writes it. */
const field = (v: string): string => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

export interface ExportOfficial {
  id: string; employee_id: string | null; name_th: string | null; name_en: string | null; position: string | null;
  agency_code: string; email: string | null; phone: string | null; status: string;
}

/** The export's first line: BOM and the columns, import columns first. */
export function csvHeader(): string {
  return BOM + [...IMPORT_COLUMNS, ...EXPORT_ONLY_COLUMNS].map(field).join(",") + "\r\n";
}

/** The export's lines for these officials: every cell formula-safe, CRLF (byte for byte the CLI's). */
export function csvRows(officials: ExportOfficial[], roles: string[]): string {
  return officials.map((o, i) =>
    [o.employee_id, o.name_th, o.name_en, o.position, o.agency_code, o.email, o.phone, o.status, roles[i] ?? "", o.id]
      .map((v) => field(escapeCell(v ?? ""))).join(",") + "\r\n").join("");
}

/** The whole export at once (the console streams `csvHeader` and `csvRows` per page instead). */
export function writeCsv(officials: ExportOfficial[], roles: string[]): string {
  return csvHeader() + csvRows(officials, roles);
}
