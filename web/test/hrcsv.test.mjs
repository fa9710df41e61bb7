// The console's HR CSV reader and writer (web/src/console/admin/hrcsv.ts)
// against answers of the CLI's (gchat/client/hr_csv.py) for the same bytes:
// encodings, RFC 4180 quoting with line numbers, the formula guard.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as h from "../build/hrcsv.mjs";

const cp874 = (s) => {
  // Thai letters U+0E01..U+0E5B are 0xA1.. in TIS-620; ASCII stays.
  return Uint8Array.from([...s].map((ch) => { const c = ch.codePointAt(0); return c < 0x80 ? c : c - 0x0e01 + 0xa1; }));
};
const utf8 = (s) => new TextEncoder().encode(s);

test("a TIS-620 file reads as the CLI reads it: quotes, blank and broken rows, the guard undone", () => {
  const raw = cp874('employee_id,name_th,agency_code,note\r\nE1,"นาย ""ก"", ข",MOI,x\r\n,,,\r\nE2,"สอง\r\nบรรทัด",MOI\r\nE3,\'=1+2,MOI,y\r\n');
  const hr = h.readImport(raw);
  assert.equal(hr.encoding, "TIS-620 (cp874)");
  assert.deepEqual(hr.ignored, ["note"]);
  assert.deepEqual(hr.rows.map((r) => [r.line, r.employee_id, r.name_th]), [[2, "E1", 'นาย "ก", ข'], [6, "E3", "=1+2"]]);
  assert.deepEqual(hr.problems, [{ line: 4, field: "", reason: "fieldCount", detail: "3/4" }]);
});

test("UTF-8 with and without a BOM; damaged UTF-8 is named by line, not read as TIS-620", () => {
  const text = "employee_id,name_en,agency_code\nE1,Somchai,MOI\n";
  assert.equal(h.readImport(utf8(text)).encoding, "UTF-8");
  const bom = h.readImport(Uint8Array.from([0xef, 0xbb, 0xbf, ...utf8(text)]));
  assert.equal(bom.encoding, "UTF-8 (with BOM)");
  assert.deepEqual(bom.header, ["employee_id", "name_en", "agency_code"]);
  const damaged = Uint8Array.from([...utf8("employee_id,name_th,agency_code\nE1,สมชาย,MOI\nE2,"), ...cp874("สม"), ...utf8(",MOI\n")]);
  assert.throws(() => h.readImport(damaged), (e) => e instanceof h.ImportFileError && e.reason === "damagedUtf8" && e.detail.line === 3);
});

test("a byte TIS-620 does not have, a missing column and bad CSV are file errors with their line", () => {
  assert.throws(() => h.readImport(Uint8Array.from([...utf8("employee_id,name_th,agency_code\nE1,"), 0xa1, 0xfc, ...utf8(",MOI\n")])),
    (e) => e.reason === "neither" && e.detail.line === 2 && e.detail.byte === 0xfc);
  assert.throws(() => h.readImport(utf8("id,name_th,agency_code\n")), (e) => e.reason === "header");
  assert.throws(() => h.readImport(utf8('employee_id,name_th,agency_code\nE1,"ก"x,MOI\n')), (e) => e.reason === "csv" && e.detail.line === 2);
  assert.throws(() => h.readImport(utf8('employee_id,name_th,agency_code\nE1,"ก,MOI\n')), (e) => e.reason === "csv");
});

test("control characters are named per cell and the row is not sent", () => {
  const hr = h.readImport(utf8("employee_id,name_th,agency_code\nE1,\"ก\u0007\",MOI\nE2,ข,MOI\n"));
  assert.deepEqual(hr.problems, [{ line: 2, field: "name_th", reason: "control", detail: "U+0007" }]);
  assert.deepEqual(hr.rows.map((r) => r.employee_id), ["E2"]);
  assert.equal(h.columnOf(hr.header, "name_th"), "B (name_th)");
  assert.equal(h.columnOf(Array.from({ length: 28 }, (_, i) => `c${i}`), "c27"), "AB (c27)");
});

test("the export is byte for byte the CLI's: BOM, CRLF, minimal quoting, formula cells inert", () => {
  const csv = h.writeCsv([{ id: "00000000-0000-0000-0000-000000000001", employee_id: "E1", name_th: 'นาย "ก"', name_en: "=cmd", position: "a,b", agency_code: "MOI", email: null, phone: "+66 1", status: "active" }], ["agency_admin@MOI"]);
  assert.equal(csv, '\ufeffemployee_id,name_th,name_en,position,agency_code,email,phone,status,roles,official_id\r\nE1,"นาย ""ก""",\'=cmd,"a,b",MOI,,\'+66 1,active,agency_admin@MOI,00000000-0000-0000-0000-000000000001\r\n');
  for (const v of ["=1", "+1", "-1", "@x", "\tx", "\rx"]) assert.equal(h.unescapeCell(h.escapeCell(v)), v);
  assert.equal(h.escapeCell("ok"), "ok");
  assert.equal(h.unescapeCell("'plain"), "'plain");
});

test("rows go in frames of at most 500", () => {
  const rows = Array.from({ length: 1201 }, (_, i) => ({ line: i + 2, employee_id: `E${i}` }));
  assert.deepEqual(h.chunks(rows).map((c) => c.length), [500, 500, 201]);
});
