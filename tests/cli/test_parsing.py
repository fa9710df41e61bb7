"""Pure checks of what the CLI reads from people: times and HR files."""

from datetime import UTC as UTC_
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gchat.client.cli_errors import UserError
from gchat.client.hr_csv import (
    ImportFileError,
    decode,
    detect,
    escape,
    read_import,
    unescape,
)
from gchat.client.times import parse_time

BANGKOK = timezone(timedelta(hours=7))
NOW = datetime(2026, 12, 4, 10, 30, tzinfo=BANGKOK)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        ("today", datetime(2026, 12, 4, tzinfo=BANGKOK)),
        ("yesterday", datetime(2026, 12, 3, tzinfo=BANGKOK)),
        ("2026-11-01T08:00+07:00", datetime(2026, 11, 1, 8, tzinfo=BANGKOK)),
        ("2026-11-01T01:00Z", datetime(2026, 11, 1, 1, tzinfo=UTC_)),
    ],
)
def test_times_people_type(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == ms(expected)


def test_a_date_without_zone_is_local_midnight() -> None:
    assert parse_time("2026-11-01", now=NOW) == ms(datetime(2026, 11, 1).astimezone())


@pytest.mark.parametrize("text", ["last tuesday", "24 hours", "-1d", "2026-13-01", ""])
def test_what_is_not_a_time_is_one_sentence(text: str) -> None:
    with pytest.raises(UserError, match="is not a time: use a date"):
        parse_time(text, now=NOW)


def test_encodings_detected_and_refused() -> None:
    thai = "employee_id,name_th\nT-1,สมชาย\n"
    assert decode(thai.encode("cp874"), "f") == (thai, "TIS-620 (cp874)")
    assert decode(b"\xef\xbb\xbf" + thai.encode(), "f") == (thai, "UTF-8 (with BOM)")
    assert decode(thai.encode(), "f") == (thai, "UTF-8")
    damaged = thai.encode() + "สมศรี".encode()[:-1] + b"\n"
    with pytest.raises(ImportFileError, match="is UTF-8 but line 3 has a damaged"):
        decode(damaged, "f")
    with pytest.raises(ImportFileError, match="is not utf-8: line 2"):
        decode(thai.encode("cp874"), "f", "utf-8")


def _in_blocks(raw: bytes, size: int):  # noqa: ANN202 (a Blocks)
    return lambda: (raw[i : i + size] for i in range(0, len(raw), size))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64])
def test_encodings_found_the_same_a_block_at_a_time(size: int) -> None:
    """The CLI reads a file in blocks (its memory must not follow the file):
    a Thai letter or a damaged one cut by a block boundary changes nothing."""
    thai = "employee_id,name_th\nT-1,สมชาย\nT-2,วิไล\n"
    for raw, label in (
        (thai.encode(), "UTF-8"),
        (b"\xef\xbb\xbf" + thai.encode(), "UTF-8 (with BOM)"),
        (thai.encode("cp874"), "TIS-620 (cp874)"),
    ):
        found = detect(_in_blocks(raw, size), "f")
        assert (found.label, found.lines) == (label, 3)
        assert raw.decode(found.codec) == thai
    damaged = thai.encode() + "สมศรี".encode()[:-1] + b"\n"
    with pytest.raises(ImportFileError, match="is UTF-8 but line 4 has a damaged"):
        detect(_in_blocks(damaged, size), "f")
    unreadable = thai.encode("cp874") + b"T-3,\xdb\n"  # 0xDB: not in TIS-620
    with pytest.raises(ImportFileError, match=r"neither UTF-8 nor TIS-620: line 4 .*0xdb"):
        detect(_in_blocks(unreadable, size), "f")
    with pytest.raises(ImportFileError, match="is not utf-8: line 2 has a byte"):
        detect(_in_blocks(thai.encode("cp874"), size), "f", "utf-8")


def test_formula_guard_round_trips() -> None:
    for value in ("=1+1", "+66 2 123 4567", "-5", "@SUM(A1)", "\tx", "ok", "'quoted", ""):
        assert unescape(escape(value)) == value
        assert not escape(value).startswith(("=", "+", "-", "@", "\t"))


def test_header_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id,name\n1,a\n")
    with pytest.raises(ImportFileError, match="must name the columns employee_id"):
        read_import(path)
