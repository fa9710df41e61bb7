"""The HR CSV file: read what Thai HR systems and Excel write, write what Excel opens.

Why each rule:

- Thai HR systems and Excel on Thai Windows save TIS-620 (Windows code page
  874); newer ones UTF-8, often with a byte-order mark. Reading detects
  which (``--encoding`` overrides) and says so; a byte that fits neither is
  reported with its line, never turned silently into the wrong letters.
- Problems are named by file line and column (the letter Excel shows and
  the header name), and a row is counted once however many problems it has.
- The export starts with a UTF-8 byte-order mark, or Excel shows Thai as
  garbage, and has the import's columns first, so it imports again.
- A cell starting with ``= + - @``, a tab or a carriage return is a formula
  to a spreadsheet (CSV injection: an official's "name" could run a
  command or leak cells when an admin opens the export). The export
  prefixes such a cell with an apostrophe, which spreadsheets show as text;
  the import removes exactly that prefix again, so names and phone numbers
  such as ``+66 2 123 4567`` survive a round trip.
"""

import _csv
import codecs
import csv
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import msgspec

from protocol import frames as f
from protocol import limits

#: Columns of the import file (the shape HR systems export), in export order.
IMPORT_COLUMNS = ("employee_id", "name_th", "name_en", "position", "agency_code", "email", "phone")
#: Extra columns of an export, ignored on import (so an export imports again).
EXPORT_ONLY_COLUMNS = ("status", "roles", "official_id")
#: Keep each import frame well under the protocol's frame limit.
CHUNK_BYTES = 160 * 1024
BOM = "\ufeff"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Thai letters in UTF-8 are E0 B8/B9 xx: a file full of them is UTF-8, even if damaged.
_UTF8_THAI = re.compile(rb"\xe0[\xb8\xb9][\x80-\xbf]")


class ImportFileError(Exception):
    """The file cannot be read as an officials import (the message says why)."""


@dataclass(frozen=True)
class Problem:
    """A problem the reader found before sending anything (the row is not sent)."""

    line: int
    field: str
    reason: str


@dataclass
class HrFile:
    rows: list[f.ImportRow]
    header: list[str]
    encoding: str
    ignored: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: Exported officials without an employee id (made by hand, not by HR):
    #: nothing to match them by, so an export re-imported passes over them.
    skipped: int = 0
    #: Lines in the file (a streamed file's rows are not counted before they are read).
    lines: int = 0

    def column(self, name: str) -> str:
        """Where a field is, as a person finds it in Excel: ``C (name_th)``."""
        if name not in self.header:
            return name
        return f"{_letters(self.header.index(name))} ({name})"


def _letters(index: int) -> str:
    text = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        text = chr(ord("A") + rest) + text
    return text


#: Bytes read at a time: the CLI's memory does not follow the file's size.
BLOCK = 1 << 20
_HIGH = bytes(range(0x80, 0x100))

#: A file's bytes, block by block, from the start each time it is called.
Blocks = Callable[[], Iterator[bytes]]


def file_blocks(path: Path) -> Blocks:
    def blocks() -> Iterator[bytes]:
        with path.open("rb") as raw:
            while block := raw.read(BLOCK):
                yield block

    return blocks


@dataclass(frozen=True)
class Encoding:
    """How a file is read: ``codec`` for Python, ``label`` for people, and
    its line count (sizes a progress bar)."""

    codec: str
    label: str
    lines: int


class _Undecodable(Exception):
    def __init__(self, line: int, byte: int) -> None:
        super().__init__(line, byte)
        self.line = line
        self.byte = byte


def _lines_as(blocks: Blocks, codec: str) -> int:
    """The file's lines read as ``codec``, one block at a time; _Undecodable
    with the line and the byte where it fails."""
    decoder = codecs.getincrementaldecoder(codec)()
    lines = 0
    for block in blocks():
        try:
            lines += decoder.decode(block).count("\n")
        except UnicodeDecodeError as error:
            # Bytes held back from the last block are an unfinished character: no newline.
            data = error.object
            raise _Undecodable(
                lines + data.count(b"\n", 0, error.start) + 1, data[error.start]
            ) from None
    try:
        lines += decoder.decode(b"", final=True).count("\n")
    except UnicodeDecodeError as error:
        raise _Undecodable(
            lines + error.object.count(b"\n", 0, error.start) + 1, error.object[error.start]
        ) from None
    return lines


def _utf8_evidence(blocks: Blocks) -> tuple[int, int]:
    """(bytes >= 0x80, of them in Thai letters written as UTF-8)."""
    high = thai = 0
    tail = b""
    for block in blocks():
        high += len(block) - len(block.translate(None, _HIGH))
        # A letter cut by the block boundary is found with the last block's tail;
        # a letter wholly in that tail was counted already and cannot start it.
        thai += 3 * len(_UTF8_THAI.findall(tail + block))
        tail = (tail + block)[-2:]
    return high, thai


def detect(blocks: Blocks, name: str, encoding: str | None = None) -> Encoding:
    """The file's encoding (``encoding`` if given, checked), by passes over its
    blocks, never holding the file."""
    if encoding is not None:
        try:
            return Encoding(encoding, encoding, _lines_as(blocks, encoding))
        except _Undecodable as bad:
            raise ImportFileError(
                f"{name} is not {encoding}: line {bad.line} has a byte "
                f"(0x{bad.byte:02x}) that {encoding} does not have"
            ) from None
        except LookupError:
            raise ImportFileError(f"unknown encoding {encoding}: use utf-8 or cp874") from None
    head = b""
    for block in blocks():
        head += block
        if len(head) >= 3:
            break
    bom = head.startswith(BOM.encode())
    label = "UTF-8 (with BOM)" if bom else "UTF-8"
    try:
        return Encoding("utf-8-sig" if bom else "utf-8", label, _lines_as(blocks, "utf-8"))
    except _Undecodable as bad:
        high, thai_utf8 = _utf8_evidence(blocks)
        if bom or thai_utf8 * 2 > high:
            raise ImportFileError(
                f"{name} is UTF-8 but line {bad.line} has a damaged "
                "character: fix that line, or give --encoding"
            ) from None
    try:
        return Encoding("cp874", "TIS-620 (cp874)", _lines_as(blocks, "cp874"))
    except _Undecodable as bad:
        raise ImportFileError(
            f"{name} is neither UTF-8 nor TIS-620: line {bad.line} has a "
            f"byte (0x{bad.byte:02x}) that neither has; save it as UTF-8 or "
            "give --encoding"
        ) from None


def decode(raw: bytes, name: str, encoding: str | None = None) -> tuple[str, str]:
    """(text, the encoding it was read as): ``detect`` on bytes in memory."""
    found = detect(lambda: iter((raw,)), name, encoding)
    return raw.decode(found.codec), found.label


def _control(value: str) -> str | None:
    """The first control character in ``value`` (as U+XXXX), if any."""
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            return f"U+{ord(ch):04X}"
    return None


def unescape(value: str) -> str:
    """Undo the export's formula guard (an apostrophe before a formula character)."""
    if len(value) > 1 and value[0] == "'" and value[1] in _FORMULA_START:
        return value[1:]
    return value


def escape(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def read_import(path: Path, encoding: str | None = None) -> HrFile:
    """The rows of an HR CSV, numbered by the file line each starts on."""
    hr, rows = stream_import(path, encoding)
    hr.rows = list(rows)
    return hr


def stream_import(path: Path, encoding: str | None = None) -> tuple[HrFile, Iterator[f.ImportRow]]:
    """The file's header at once, its rows as they are read.

    Why: a 300,000-row file as row objects is hundreds of MB, and even its
    text held whole grew the CLI by 150 MB; the file is read a block at a
    time (once to find its encoding and lines, once for its rows), so the CLI
    holds one block and one chunk of rows whatever the file's size. ``hr.rows`` stays empty;
    ``hr.problems`` and ``hr.skipped`` fill in as the rows are read, and
    ``hr.lines`` (the file's line count) sizes a progress bar.
    """
    found = detect(file_blocks(path), str(path), encoding)
    text = path.open(encoding=found.codec, newline="")  # read as the rows are
    reader = csv.reader(text, strict=True)
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as error:
        text.close()
        raise ImportFileError(f"{path} line 1: {error}") from None
    missing = [c for c in ("employee_id", "agency_code") if c not in header]
    if missing or not {"name_th", "name_en"} & set(header):
        text.close()
        raise ImportFileError(
            f"{path}: the first line must name the columns employee_id, agency_code and "
            f"name_th and/or name_en (found: {', '.join(header) or 'nothing'}; "
            f"read as {found.label})"
        )
    hr = HrFile([], header, found.label, ignored=[h for h in header if h not in IMPORT_COLUMNS])
    hr.lines = found.lines
    return hr, _rows(path, text, reader, hr)


def _rows(path: Path, text: TextIO, reader: "_csv.Reader", hr: HrFile) -> Iterator[f.ImportRow]:
    with text:
        yield from _records(path, reader, hr)


def _records(path: Path, reader: "_csv.Reader", hr: HrFile) -> Iterator[f.ImportRow]:
    header = hr.header
    where = {name: header.index(name) for name in IMPORT_COLUMNS if name in header}
    exported = header.index("official_id") if "official_id" in header else None
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader, None)
        except csv.Error as error:
            raise ImportFileError(f"{path} line {line}: {error}") from None
        except UnicodeDecodeError:  # it was read whole before: it changed since
            raise ImportFileError(f"{path} changed while it was read (line {line})") from None
        if record is None:
            break
        if not record or all(not cell.strip() for cell in record):
            continue  # a blank line
        if len(record) != len(header):
            hr.problems.append(
                Problem(line, "", f"the row has {len(record)} fields, the header {len(header)}")
            )
            continue
        values = {}
        for name, index in where.items():
            value = unescape(record[index])
            values[name] = value[: limits.MAX_IMPORT_TEXT] if value.strip() else None
        if values.get("employee_id") is None and exported is not None and record[exported]:
            hr.skipped += 1
            continue
        bad = [(name, _control(v)) for name, v in values.items() if v and _control(v)]
        if bad:  # the protocol refuses a frame holding one: name the cell instead
            hr.problems.extend(
                Problem(
                    line,
                    name,
                    f"contains the control character {char} (a line break inside a cell?)",
                )
                for name, char in bad
            )
            continue
        yield f.ImportRow(line=line, **values)


def chunks(rows: Iterable[f.ImportRow]) -> Iterator[list[f.ImportRow]]:
    """Rows in frames of at most MAX_IMPORT_ROWS rows and about CHUNK_BYTES."""
    chunk: list[f.ImportRow] = []
    size = 0
    for row in rows:
        row_size = len(msgspec.msgpack.encode(row))
        if chunk and (len(chunk) >= limits.MAX_IMPORT_ROWS or size + row_size > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk


def write_csv(officials: Sequence[f.OfficialInfo], roles: Sequence[str], out: TextIO) -> None:
    """The export: BOM, import columns first, every cell formula-safe."""
    write_csv_header(out)
    write_csv_rows(officials, roles, out)


def write_csv_header(out: TextIO) -> None:
    out.write(BOM)
    csv.writer(out, lineterminator="\r\n").writerow(IMPORT_COLUMNS + EXPORT_ONLY_COLUMNS)


def write_csv_rows(officials: Sequence[f.OfficialInfo], roles: Sequence[str], out: TextIO) -> None:
    """One page of the export (after ``write_csv_header``).

    The cells as ``escape`` makes them, in one ``writerows``: a 400,000-row
    export spends its client time here. The id is never escaped (hex digits
    and dashes start no formula).
    """

    def cell(value: str | None) -> str:
        return escape(value) if value else ""

    csv.writer(out, lineterminator="\r\n").writerows(
        (
            cell(o.employee_id),
            cell(o.name_th),
            cell(o.name_en),
            cell(o.position),
            cell(o.agency_code),
            cell(o.email),
            cell(o.phone),
            cell(o.status),
            cell(role_text),
            str(o.id),
        )
        for o, role_text in zip(officials, roles, strict=True)
    )
