"""The JSON and MessagePack codecs: round trips, fuzzing, exact error codes.

Strategies are derived from the frames' own schema (``msgspec.inspect``), so
every Meta constraint (lengths, ranges, patterns) is respected and a new frame
type or field is covered without touching this file. Pure unit tests: no
network, no database.
"""

from __future__ import annotations

import base64
import json
import math
import unicodedata
from typing import Any
from uuid import UUID

import hypothesis.strategies as st
import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings

from protocol import limits
from protocol.codec import Codec, client_codec, server_codec
from protocol.errors import (
    ErrorCode,
    FrameTooLarge,
    InvalidField,
    MalformedFrame,
    ProtocolError,
    UnknownFrameType,
)
from protocol.frames import (
    CLIENT_FRAME_TYPES,
    SERVER_FRAME_TYPES,
    Ack,
    Challenge,
    Envelope,
    Error,
    Send,
)
from protocol.version import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, SUBPROTOCOLS

BOTH = pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT64 = (-(2**63), 2**63 - 1)
#: Generated sizes stay small (speed); the limits themselves are tested at
#: their boundaries in test_frames.py.
SMALL = 6


# --- strategies derived from the schema --------------------------------------


def _bounded(low: int | None, high: int | None, cap: int) -> tuple[int, int]:
    """(min, max) sizes for a generated collection: the schema's, capped."""
    lo = low or 0
    hi = high if high is not None else lo + cap
    return lo, min(hi, lo + cap)


#: Text the server accepts (protocol.text): no control characters anywhere;
#: display text (names, titles) also no format characters or separators, NFC.
PLAIN_TEXT = st.characters(exclude_categories=("Cc", "Cs"))
DISPLAY_TEXT = st.characters(exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp"))


def strategy_for(t: mi.Type, display: bool = False) -> st.SearchStrategy[Any]:
    """A strategy for values of one msgspec type that satisfy its constraints."""
    if isinstance(t, mi.Metadata):
        return strategy_for(t.type, display or (t.extra or {}).get("text") == "display")
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else INT64[0])
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else INT64[1])
        return st.integers(lo, hi)
    if isinstance(t, mi.FloatType):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.StrType):
        lo, hi = _bounded(t.min_length, t.max_length, 40)
        if t.pattern is not None:
            return st.from_regex(t.pattern, fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
        if display:
            nfc = st.text(DISPLAY_TEXT, min_size=lo, max_size=hi).map(
                lambda s: unicodedata.normalize("NFC", s)
            )
            return nfc.filter(lambda s: lo <= len(s) <= hi)
        return st.text(PLAIN_TEXT, min_size=lo, max_size=hi)
    if isinstance(t, mi.BytesType):
        lo, hi = _bounded(t.min_length, t.max_length, 48)
        return st.binary(min_size=lo, max_size=hi)
    if isinstance(t, mi.ListType):
        lo, hi = _bounded(t.min_length, t.max_length, SMALL)
        return st.lists(strategy_for(t.item_type, display), min_size=lo, max_size=hi)
    if isinstance(t, mi.UUIDType):
        return st.uuids()
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.UnionType):
        return st.one_of(*(strategy_for(member, display) for member in t.types))
    if isinstance(t, mi.StructType):
        return st.builds(t.cls, **{f.name: strategy_for(f.type) for f in t.fields})
    raise TypeError(f"no strategy for {t!r}: extend strategy_for")


def frame_strategy(cls: type) -> st.SearchStrategy[Any]:
    return strategy_for(mi.type_info(cls))


CLIENT_STRATEGIES = {cls: frame_strategy(cls) for cls in CLIENT_FRAME_TYPES}
SERVER_STRATEGIES = {cls: frame_strategy(cls) for cls in SERVER_FRAME_TYPES}
ANY_CLIENT_FRAME = st.one_of(*CLIENT_STRATEGIES.values())
ANY_SERVER_FRAME = st.one_of(*SERVER_STRATEGIES.values())

TAGS = [cls.__struct_config__.tag for cls in CLIENT_FRAME_TYPES + SERVER_FRAME_TYPES]

# Arbitrary JSON / MessagePack values.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=10) | st.integers(-5, 5), inner, max_size=5)
    ),
    max_leaves=25,
)


def with_valid_type(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    """Maps with a real ``type`` tag and random other fields."""
    return st.builds(
        lambda tag, rest: {**rest, "type": tag},
        st.sampled_from(TAGS),
        st.dictionaries(st.text(max_size=20), values, max_size=6),
    )


# --- helpers -------------------------------------------------------------------


def decode_never_leaks(codec: Codec[Any], data: bytes | str) -> None:
    """Decoding returns a frame or raises a ProtocolError subclass, nothing else."""
    try:
        codec.decode(data)
    except ProtocolError as error:
        assert isinstance(error.code, ErrorCode)
        assert error.detail == str(error)


def both_decoders() -> list[Codec[Any]]:
    return [make(sp) for sp in SUBPROTOCOLS for make in (server_codec, client_codec)]


def json_codec() -> Codec[Any]:
    return server_codec(JSON_SUBPROTOCOL)


def msgpack_codec() -> Codec[Any]:
    return server_codec(MSGPACK_SUBPROTOCOL)


DEVICE = UUID("6f1c1f0e-8a43-4c61-9d5e-2d1f3b4a5c6d")
RECIPIENT = UUID("00000000-0000-4000-8000-000000000001")


def send_dict(**changes: Any) -> dict[str, Any]:
    """A valid ``send`` frame as a JSON-ready map, with ``changes`` applied."""
    frame: dict[str, Any] = {
        "type": "send",
        "rid": 1,
        "client_message_id": "m-1",
        "recipient": str(RECIPIENT),
        "envelopes": [{"device_id": str(DEVICE), "ciphertext": "AAEC"}],
    }
    frame.update(changes)
    return frame


def code_of(codec: Codec[Any], data: bytes | str) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        codec.decode(data)
    return caught.value.code


# --- round trips -----------------------------------------------------------------


def test_every_frame_type_has_a_strategy() -> None:
    assert set(CLIENT_STRATEGIES) == set(CLIENT_FRAME_TYPES)
    assert set(SERVER_STRATEGIES) == set(SERVER_FRAME_TYPES)


DIRECTIONS = [
    *((t, client_codec, server_codec, CLIENT_STRATEGIES) for t in CLIENT_FRAME_TYPES),
    *((t, server_codec, client_codec, SERVER_STRATEGIES) for t in SERVER_FRAME_TYPES),
]


@pytest.mark.parametrize(
    ("frame_type", "encoding", "decoding", "strategies"),
    DIRECTIONS,
    ids=[d[0].__name__ for d in DIRECTIONS],
)
def test_frames_round_trip(frame_type: type, encoding: Any, decoding: Any, strategies: Any) -> None:
    """Client frames client->server and server frames server->client, in both codecs.

    Each generated frame goes through both codecs: every codec still sees
    ``ROUND_TRIP`` examples of every frame type, and the drawing (most of this
    test's time) is done once for the two of them.
    """
    codecs = [(sp, encoding(sp), decoding(sp)) for sp in SUBPROTOCOLS]

    @ROUND_TRIP
    @given(frame=strategies[frame_type])
    def check(frame: Any) -> None:
        for subprotocol, encoder, decoder in codecs:
            data = encoder.encode(frame)
            assert isinstance(data, bytes if subprotocol == MSGPACK_SUBPROTOCOL else str)
            decoded = decoder.decode(data)
            assert type(decoded) is frame_type, subprotocol
            assert decoded == frame, subprotocol

    check()


@BOTH
def test_codec_kind_follows_subprotocol(subprotocol: str) -> None:
    codec = server_codec(subprotocol)
    assert codec.subprotocol == subprotocol
    assert codec.binary is (subprotocol == MSGPACK_SUBPROTOCOL)


@pytest.mark.parametrize("name", ["", "gchat.v1", "gchat.v2+json", "GCHAT.V1+JSON", "json"])
def test_unsupported_subprotocol_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        server_codec(name)
    with pytest.raises(ValueError):
        client_codec(name)


@BOTH
def test_a_direction_does_not_decode_the_other_directions_frames(subprotocol: str) -> None:
    """Tags are disjoint: a server frame sent to the server is an unknown type."""
    challenge = Challenge(server_id="gchat", nonce=bytes(32))
    ack = Ack(positions=[1])
    assert code_of(server_codec(subprotocol), server_codec(subprotocol).encode(challenge)) == (
        ErrorCode.UNKNOWN_FRAME_TYPE
    )
    assert code_of(client_codec(subprotocol), client_codec(subprotocol).encode(ack)) == (
        ErrorCode.UNKNOWN_FRAME_TYPE
    )


# --- fuzzing: only ProtocolError ever escapes ------------------------------------------


@FUZZ
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for codec in both_decoders():
        decode_never_leaks(codec, data)


@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_text_raises_only_protocol_errors(text: str) -> None:
    for codec in both_decoders():
        decode_never_leaks(codec, text)


@FUZZ
@given(value=json_values | with_valid_type(json_values))
def test_arbitrary_json_values_raise_only_protocol_errors(value: Any) -> None:
    text = json.dumps(value)
    for make in (server_codec, client_codec):
        codec = make(JSON_SUBPROTOCOL)
        decode_never_leaks(codec, text)
        decode_never_leaks(codec, text.encode())


@FUZZ
@given(value=msgpack_values | with_valid_type(msgpack_values))
def test_arbitrary_msgpack_values_raise_only_protocol_errors(value: Any) -> None:
    data = msgspec.msgpack.encode(value)
    for make in (server_codec, client_codec):
        decode_never_leaks(make(MSGPACK_SUBPROTOCOL), data)


def _mutations(builtins: dict[str, Any], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = sorted(builtins)
    return st.one_of(
        st.sampled_from(keys).map(lambda k: {x: v for x, v in builtins.items() if x != k}),
        st.tuples(st.sampled_from(keys), values).map(lambda kv: {**builtins, kv[0]: kv[1]}),
        st.tuples(st.text(max_size=12), values).map(lambda kv: {**builtins, kv[0]: kv[1]}),
    )


@FUZZ
@given(data=st.data())
def test_mutated_valid_frames_raise_only_protocol_errors(data: st.DataObject) -> None:
    """Valid frames with a field dropped, replaced by junk, or added."""
    frame = data.draw(ANY_CLIENT_FRAME | ANY_SERVER_FRAME)
    as_json = msgspec.to_builtins(frame)
    mutated = data.draw(_mutations(as_json, json_values))
    for make in (server_codec, client_codec):
        decode_never_leaks(make(JSON_SUBPROTOCOL), json.dumps(mutated))
    as_msgpack = msgspec.to_builtins(frame, builtin_types=(bytes,))
    mutated = data.draw(_mutations(as_msgpack, msgpack_values))
    for make in (server_codec, client_codec):
        decode_never_leaks(make(MSGPACK_SUBPROTOCOL), msgspec.msgpack.encode(mutated))


@FUZZ
@given(frame=ANY_CLIENT_FRAME, cut=st.integers(min_value=0))
def test_truncated_frames_are_malformed(frame: Any, cut: int) -> None:
    for sp in SUBPROTOCOLS:
        data = client_codec(sp).encode(frame)
        truncated = data[: cut % len(data)]
        assert code_of(server_codec(sp), truncated) in (
            ErrorCode.MALFORMED_FRAME,
            ErrorCode.INVALID_FIELD,
            ErrorCode.UNKNOWN_FRAME_TYPE,
        )


# --- exact error codes -------------------------------------------------------------


def test_malformed_json_is_malformed_frame() -> None:
    codec = json_codec()
    cases: list[bytes | str] = [
        '{"type": "ack", ',
        "",
        "not json",
        b"\xff\xfe",
        '{"type":"ack","positions":[1]} trailing',
    ]
    for data in cases:
        with pytest.raises(MalformedFrame):
            codec.decode(data)
        assert code_of(codec, data) == ErrorCode.MALFORMED_FRAME


def test_malformed_msgpack_is_malformed_frame() -> None:
    codec = msgpack_codec()
    for data in [
        b"",
        b"\xc1",
        b"\x81",
        msgspec.msgpack.encode({"type": "ack", "positions": [1]}) + b"\x00",
    ]:
        assert code_of(codec, data) == ErrorCode.MALFORMED_FRAME


@BOTH
def test_unknown_type_is_unknown_frame_type(subprotocol: str) -> None:
    codec = server_codec(subprotocol)
    for value in [{"type": "nope"}, {"type": "nope", "rid": 1}, {"type": 7}, {"type": None}]:
        data = json.dumps(value) if not codec.binary else msgspec.msgpack.encode(value)
        with pytest.raises(UnknownFrameType):
            codec.decode(data)
        assert code_of(codec, data) == ErrorCode.UNKNOWN_FRAME_TYPE


@BOTH
def test_missing_type_is_unknown_frame_type(subprotocol: str) -> None:
    codec = server_codec(subprotocol)
    for value in [{}, {"rid": 1, "positions": [1]}]:
        data = json.dumps(value) if not codec.binary else msgspec.msgpack.encode(value)
        assert code_of(codec, data) == ErrorCode.UNKNOWN_FRAME_TYPE


@BOTH
def test_not_a_map_is_invalid_field(subprotocol: str) -> None:
    codec = server_codec(subprotocol)
    for value in [[], "ack", 1, None]:
        data = json.dumps(value) if not codec.binary else msgspec.msgpack.encode(value)
        assert code_of(codec, data) == ErrorCode.INVALID_FIELD


@pytest.mark.parametrize(
    "changes",
    [
        {"rid": "1"},
        {"rid": 1.0},
        {"rid": True},
        {"rid": -1},
        {"recipient": "not-a-uuid"},
        {"envelopes": "x"},
        {"envelopes": []},
        {"envelopes": [{"device_id": str(DEVICE)}]},
        {"envelopes": [{"device_id": str(DEVICE), "ciphertext": ""}]},
        {"client_message_id": ""},
        {"client_message_id": "has space"},
    ],
    ids=repr,
)
def test_wrong_field_is_invalid_field(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidField):
        json_codec().decode(json.dumps(send_dict(**changes)))


@BOTH
def test_positions_as_string_is_invalid_field(subprotocol: str) -> None:
    codec = server_codec(subprotocol)
    value = {"type": "ack", "positions": "1,2,3"}
    data = json.dumps(value) if not codec.binary else msgspec.msgpack.encode(value)
    assert code_of(codec, data) == ErrorCode.INVALID_FIELD


@BOTH
def test_unknown_extra_field_is_invalid_field(subprotocol: str) -> None:
    codec = server_codec(subprotocol)
    for value in [
        {"type": "ack", "positions": [1], "rid": 3},
        {"type": "ack", "positions": [1], "extra": None},
        send_dict(envelopes=[{"device_id": str(DEVICE), "ciphertext": "AA==", "x": 1}]),
    ]:
        data = json.dumps(value) if not codec.binary else msgspec.msgpack.encode(value)
        assert code_of(codec, data) == ErrorCode.INVALID_FIELD


@BOTH
def test_ciphertext_over_the_limit_is_invalid_field(subprotocol: str) -> None:
    def send(size: int) -> Send:
        envelope = Envelope(device_id=DEVICE, ciphertext=b"\x01" * size)
        return Send(rid=1, client_message_id="m", recipient=RECIPIENT, envelopes=[envelope])

    data = client_codec(subprotocol).encode(send(limits.MAX_CIPHERTEXT_BYTES + 1))
    assert len(data) <= limits.MAX_FRAME_BYTES  # refused for the field, not the frame
    assert code_of(server_codec(subprotocol), data) == ErrorCode.INVALID_FIELD
    fits = client_codec(subprotocol).encode(send(limits.MAX_CIPHERTEXT_BYTES))
    assert server_codec(subprotocol).decode(fits) == send(limits.MAX_CIPHERTEXT_BYTES)


def test_message_over_max_frame_bytes_is_frame_too_large() -> None:
    over = limits.MAX_FRAME_BYTES + 1
    for codec in both_decoders():
        for data in (b" " * over, " " * over, b"\x00" * over):
            with pytest.raises(FrameTooLarge):
                codec.decode(data)
            assert code_of(codec, data) == ErrorCode.FRAME_TOO_LARGE


def test_message_at_max_frame_bytes_is_read() -> None:
    """Exactly MAX_FRAME_BYTES is allowed: a padded-out valid frame decodes."""
    base = json.dumps(send_dict())
    padded = base[:-1] + " " * (limits.MAX_FRAME_BYTES - len(base)) + "}"
    assert len(padded) == limits.MAX_FRAME_BYTES
    assert isinstance(json_codec().decode(padded), Send)


def test_text_frame_on_msgpack_codec_is_malformed_frame() -> None:
    valid_json = json.dumps({"type": "ack", "positions": [1]})
    for codec in (server_codec(MSGPACK_SUBPROTOCOL), client_codec(MSGPACK_SUBPROTOCOL)):
        assert code_of(codec, valid_json) == ErrorCode.MALFORMED_FRAME
        assert code_of(codec, "") == ErrorCode.MALFORMED_FRAME


def test_error_codes_of_the_exception_family() -> None:
    assert MalformedFrame("x").code == ErrorCode.MALFORMED_FRAME
    assert UnknownFrameType("x").code == ErrorCode.UNKNOWN_FRAME_TYPE
    assert InvalidField("x").code == ErrorCode.INVALID_FIELD
    assert FrameTooLarge("x").code == ErrorCode.FRAME_TOO_LARGE


# --- wire representation ----------------------------------------------------------

PINNED_SEND = Send(
    rid=7,
    client_message_id="m-1",
    recipient=RECIPIENT,
    envelopes=[Envelope(device_id=DEVICE, ciphertext=b"\xfb\xff")],
)
PINNED_SEND_JSON = (
    '{"type":"send","rid":7,"client_message_id":"m-1",'
    '"recipient":"00000000-0000-4000-8000-000000000001",'
    '"envelopes":[{"device_id":"6f1c1f0e-8a43-4c61-9d5e-2d1f3b4a5c6d","ciphertext":"+/8="}]}'
)


def test_pinned_json_text_of_a_send() -> None:
    """bytes are standard padded base64, UUIDs canonical lowercase strings, type first."""
    assert client_codec(JSON_SUBPROTOCOL).encode(PINNED_SEND) == PINNED_SEND_JSON
    assert json_codec().decode(PINNED_SEND_JSON) == PINNED_SEND


def test_pinned_json_text_of_server_frames() -> None:
    codec = server_codec(JSON_SUBPROTOCOL)
    challenge = Challenge(server_id="gchat", nonce=bytes(range(32)))
    assert codec.encode(challenge) == (
        '{"type":"challenge","server_id":"gchat",'
        '"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}'
    )
    # Optional fields are always present in what the server sends.
    assert codec.encode(Error(rid=None, code="malformed_frame", message="bad")) == (
        '{"type":"error","rid":null,"code":"malformed_frame","message":"bad",'
        '"missing":[],"stale":[],"retry_after":null}'
    )


def test_msgpack_uses_bin_for_bytes_and_str_for_uuids() -> None:
    data = client_codec(MSGPACK_SUBPROTOCOL).encode(PINNED_SEND)
    assert isinstance(data, bytes)
    assert msgspec.msgpack.decode(data) == {
        "type": "send",
        "rid": 7,
        "client_message_id": "m-1",
        "recipient": "00000000-0000-4000-8000-000000000001",
        "envelopes": [
            {"device_id": "6f1c1f0e-8a43-4c61-9d5e-2d1f3b4a5c6d", "ciphertext": b"\xfb\xff"}
        ],
    }
    assert b"\xc4\x02\xfb\xff" in data  # bin 8, length 2
    assert b"\xd9\x24" + str(RECIPIENT).encode() in data  # str 8, length 36


@pytest.mark.parametrize("ciphertext", ["AAEC", "AA==", "+/8="])
def test_json_accepts_standard_padded_base64(ciphertext: str) -> None:
    envelopes = [{"device_id": str(DEVICE), "ciphertext": ciphertext}]
    frame = json_codec().decode(json.dumps(send_dict(envelopes=envelopes)))
    assert isinstance(frame, Send)
    assert frame.envelopes[0].ciphertext == base64.b64decode(ciphertext)


@pytest.mark.parametrize("ciphertext", ["AA", "-_8=", "AA=", "A", "AA==\n", "@@@@"])
def test_json_refuses_unpadded_or_urlsafe_base64(ciphertext: str) -> None:
    envelopes = [{"device_id": str(DEVICE), "ciphertext": ciphertext}]
    assert code_of(json_codec(), json.dumps(send_dict(envelopes=envelopes))) == (
        ErrorCode.INVALID_FIELD
    )


@BOTH
def test_field_order_does_not_matter(subprotocol: str) -> None:
    value = {"positions": [3, 1], "type": "ack"}
    codec = server_codec(subprotocol)
    data = json.dumps(value) if not codec.binary else msgspec.msgpack.encode(value)
    assert codec.decode(data) == Ack(positions=[3, 1])


def test_error_frame_defaults_on_decode() -> None:
    """A client must accept an error without the optional fields."""
    frame = client_codec(JSON_SUBPROTOCOL).decode(
        '{"type":"error","rid":3,"code":"not_found","message":"x"}'
    )
    assert frame == Error(rid=3, code="not_found", message="x")
    assert frame.missing == [] and frame.stale == [] and frame.retry_after is None


def test_floats_for_retry_after_survive_json() -> None:
    for value in (0.02, 1e-9, 3600.0, math.pi):
        frame = Error(rid=1, code="rate_limited", message="slow down", retry_after=value)
        text = server_codec(JSON_SUBPROTOCOL).encode(frame)
        assert client_codec(JSON_SUBPROTOCOL).decode(text) == frame


# --- inputs that once escaped as non-protocol errors ---------------------------------


@BOTH
def test_deeply_nested_value_before_the_tag_is_a_protocol_error(subprotocol: str) -> None:
    depth = 5000
    if subprotocol == JSON_SUBPROTOCOL:
        data: bytes | str = '{"x":' + "[" * depth + "]" * depth + ',"type":"ack","positions":[1]}'
    else:
        data = (
            b"\x83"
            + msgspec.msgpack.encode("x")
            + b"\x91" * depth
            + b"\x90"
            + msgspec.msgpack.encode("type")
            + msgspec.msgpack.encode("ack")
            + msgspec.msgpack.encode("positions")
            + msgspec.msgpack.encode([1])
        )
    assert len(data) < limits.MAX_FRAME_BYTES
    decode_never_leaks(server_codec(subprotocol), data)


def test_lone_surrogate_in_text_is_a_protocol_error() -> None:
    decode_never_leaks(json_codec(), '{"type":"ack","positions":["\ud800"]}')


@BOTH
@pytest.mark.parametrize(
    ("changes", "rid"),
    [
        ({"rid": 41, "envelopes": "x"}, 41),  # the schema refuses it, the rid is good
        ({"rid": 41, "type": "no_such_frame"}, 41),
        ({"rid": -1}, None),  # a bad rid is never echoed
        ({"rid": True}, None),
        ({"rid": 2**31}, None),
        ({"rid": "41", "envelopes": "x"}, None),
    ],
    ids=repr,
)
def test_a_refused_frame_carries_its_rid_when_it_has_a_good_one(
    subprotocol: str, changes: dict[str, Any], rid: int | None
) -> None:
    """A client waiting on a request learns it was refused (PROTOCOL §3)."""
    codec = server_codec(subprotocol)
    value = send_dict(**changes)
    data = json.dumps(value) if not codec.binary else msgspec.msgpack.encode(value)
    with pytest.raises(ProtocolError) as caught:
        codec.decode(data)
    assert caught.value.rid == rid
