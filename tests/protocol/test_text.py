"""The text rule (protocol.text) over every string field of every client frame.

The fields are found from the schema, so a new frame or field is covered
without touching this file: a valid frame is generated, one string field is
given a forbidden character, and the server codec must refuse it with
``invalid_field`` naming exactly that field and carrying the request's id.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import frames as f
from protocol import text
from protocol.codec import server_codec
from protocol.errors import ErrorCode, ProtocolError
from protocol.version import MSGPACK_SUBPROTOCOL, SUBPROTOCOLS

from .test_codec import CLIENT_STRATEGIES, strategy_for

TEXT_FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))

#: Refused in every string: U+0000, C0 and C1 controls, DEL.
CONTROLS = ["\x00", "\x01", "\x1b", "\n", "\x7f", "\x85", "\x9b"]
#: Refused in display text (names, titles) only: bidi overrides and isolates,
#: marks, zero-width characters, the BOM, line and paragraph separators.
INVISIBLE = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\u200b", "\u200d",
             "\u2060", "\ufeff", "\u2028", "\u00ad"]

Step = str | mi.Type  # a field's wire name, or a list's item type (index 0)


def text_fields(
    info: mi.Type, steps: tuple[Step, ...] = (), display: bool = False
) -> Iterator[tuple[tuple[Step, ...], bool]]:
    """Every free-text string field reachable in ``info``: (steps, display?)."""
    if isinstance(info, mi.Metadata):
        yield from text_fields(info.type, steps, display or info.extra == {"text": "display"})
    elif isinstance(info, mi.StrType):
        if info.pattern is None:  # patterned strings are the schema's business
            yield steps, display
    elif isinstance(info, mi.UnionType):
        for member in info.types:
            yield from text_fields(member, steps, display)
    elif isinstance(info, mi.ListType):
        yield from text_fields(info.item_type, (*steps, info.item_type), display)
    elif isinstance(info, mi.StructType):
        for fld in info.fields:
            yield from text_fields(fld.type, (*steps, fld.encode_name), display)


CASES = [
    (cls, steps, display)
    for cls in f.CLIENT_FRAME_TYPES
    for steps, display in text_fields(mi.type_info(cls))
]
DISPLAY_CASES = [case for case in CASES if case[2]]


def case_id(case: tuple[type, tuple[Step, ...], bool]) -> str:
    cls, steps, _ = case
    return cls.__struct_config__.tag + "".join(  # type: ignore[operator]
        f".{s}" if isinstance(s, str) else "[0]" for s in steps
    )


def test_the_fields_the_issue_named_are_covered() -> None:
    names = {case_id(case) for case in CASES}
    for field in ("search_officials.query", "create_group.title", "rename_group.title",
                  "enroll.device_name", "enroll.platform", "create_official.name",
                  "import_rows.rows[0].name_th", "audit_query.kinds[0]"):
        assert field in names
    displays = {case_id(case) for case in DISPLAY_CASES}
    assert {"create_group.title", "rename_group.title", "create_official.name",
            "update_official.name_en", "enroll.device_name"} <= displays


def plant(
    data: st.DataObject, frame: dict[str, Any], steps: tuple[Step, ...], value: str
) -> str:
    """Put ``value`` at ``steps`` in the frame's map; returns the JSON path to it."""
    node: Any = frame
    path = "$"
    for i, step in enumerate(steps[:-1]):
        if isinstance(step, str):
            node, path = node[step], f"{path}.{step}"
        else:
            if not node:
                item = data.draw(strategy_for(step))
                node.append(msgspec.to_builtins(item, builtin_types=(bytes, UUID)))
            node, path = node[0], f"{path}[0]"
        del i
    last = steps[-1]
    if isinstance(last, str):
        node[last] = value
        return f"{path}.{last}"
    node[:1] = [value]
    return f"{path}[0]"


def wire(frame: dict[str, Any]) -> bytes:
    return msgspec.msgpack.encode(frame)


def fill(data: st.DataObject, cls: type, steps: tuple[Step, ...], value: str) -> tuple[bytes, str]:
    frame = msgspec.to_builtins(data.draw(CLIENT_STRATEGIES[cls]), builtin_types=(bytes, UUID))
    assert isinstance(frame, dict)
    frame["rid"] = 77 if "rid" in cls.__struct_fields__ else frame.get("rid")
    if frame["rid"] is None:
        del frame["rid"]
    path = plant(data, frame, steps, value)
    return wire(frame), path


@pytest.mark.parametrize("case", CASES, ids=case_id)
@TEXT_FUZZ
@given(data=st.data(), bad=st.sampled_from(CONTROLS))
def test_every_string_refuses_control_characters(
    case: tuple[type, tuple[Step, ...], bool], data: st.DataObject, bad: str
) -> None:
    cls, steps, _ = case
    frame, path = fill(data, cls, steps, f"ok{bad}")
    with pytest.raises(ProtocolError) as caught:
        server_codec(MSGPACK_SUBPROTOCOL).decode(frame)
    assert caught.value.code is ErrorCode.INVALID_FIELD
    assert caught.value.detail.endswith(f"- at `{path}`"), caught.value.detail
    assert f"U+{ord(bad):04X}" in caught.value.detail
    if "rid" in cls.__struct_fields__:
        assert caught.value.rid == 77


@pytest.mark.parametrize("case", CASES, ids=case_id)
@TEXT_FUZZ
@given(data=st.data(), bad=st.sampled_from(INVISIBLE))
def test_invisible_characters_are_refused_in_display_text_only(
    case: tuple[type, tuple[Step, ...], bool], data: st.DataObject, bad: str
) -> None:
    cls, steps, display = case
    frame, path = fill(data, cls, steps, f"ok{bad}")
    if not display:
        server_codec(MSGPACK_SUBPROTOCOL).decode(frame)  # a query may hold a ZWSP
        return
    with pytest.raises(ProtocolError) as caught:
        server_codec(MSGPACK_SUBPROTOCOL).decode(frame)
    assert caught.value.code is ErrorCode.INVALID_FIELD
    assert caught.value.detail.endswith(f"- at `{path}`"), caught.value.detail


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
def test_display_text_is_nfc_normalised(subprotocol: str) -> None:
    decomposed = "Jose\u0301 \u0e19\u0e32\u0e22"  # e + combining acute, then Thai
    frame = f.CreateGroup(rid=1, title=decomposed, members=[])
    codec = server_codec(subprotocol)
    encoded = (msgspec.msgpack.encode(frame) if codec.binary
               else msgspec.json.encode(frame).decode())
    decoded = codec.decode(encoded)
    assert isinstance(decoded, f.CreateGroup)
    assert decoded.title == unicodedata.normalize("NFC", decomposed) != decomposed


def test_thai_and_ordinary_punctuation_pass() -> None:
    for value in ("นายสมชาย ใจดี", "ผอ.กอง ๑", "O'Brien-Smith (Dr.)", "กระทรวงการคลัง"):
        assert text.problem(value, display=True) is None
    assert text.problem("a\u200bb", display=False) is None
    assert text.problem("a\u200bb", display=True) is not None


def test_json_escapes_cannot_smuggle_what_the_bytes_cannot() -> None:
    codec = server_codec("gchat.v1+json")
    for escaped in ("\\u0000", "\\u202e", "\\ufeff", "\\u0085"):
        body = '{"type":"rename_group","rid":3,"conversation_id":' \
               '"00000000-0000-4000-8000-000000000001","title":"x' + escaped + '"}'
        with pytest.raises(ProtocolError) as caught:
            codec.decode(body)
        assert caught.value.code is ErrorCode.INVALID_FIELD and caught.value.rid == 3
    with pytest.raises(ProtocolError):  # a lone surrogate is not UTF-8 at all
        codec.decode('{"type":"search_officials","rid":3,"query":"\\ud800"}')


def _problem_by_character(value: str, display: bool) -> bool:
    """The rule as written in PROTOCOL.md, one character at a time."""
    return any(
        unicodedata.category(c) in ("Cc", "Cs")
        or (display and (unicodedata.category(c) == "Cf" or c in "\u2028\u2029"))
        for c in value
    )


@settings(max_examples=300, deadline=None)
@given(value=st.text(st.characters(codec=None, exclude_categories=())), display=st.booleans())
def test_the_quick_check_finds_what_the_character_rule_finds(value: str, display: bool) -> None:
    """problem() skips its per-character loop for printable text; that must
    not let through anything the loop refuses (spaces, NBSP and unassigned
    code points, also not printable, still reach the loop)."""
    assert (text.problem(value, display=display) is not None) == _problem_by_character(
        value, display
    )
    for bad in ("\x00", "\u202e", "\u00a0\x1b"):
        assert (text.problem(value + bad, display=True) is not None) == _problem_by_character(
            value + bad, True
        )
