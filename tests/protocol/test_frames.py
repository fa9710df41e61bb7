"""Frame schema, version negotiation, and the limits table against the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import msgspec.inspect as mi
import pytest

from gchat.config import Config
from protocol import frames as f
from protocol import limits
from protocol.codec import client_codec, server_codec
from protocol.errors import CloseCode, ErrorCode, FrameTooLarge, ProtocolError
from protocol.version import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    PROTOCOL_VERSION,
    SUBPROTOCOLS,
    negotiate,
)

ID = UUID("00000000-0000-4000-8000-0000000000aa")
KEY = bytes(32)
SIG = bytes(64)


def field_type(cls: type, name: str) -> mi.Type:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return next(field.type for field in info.fields if field.name == name)


def valid(cls: type, value: dict[str, Any]) -> Any:
    return msgspec.convert(value, cls)


def refused(cls: type, value: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(value, cls)


def decode_code(data: bytes | str, subprotocol: str = MSGPACK_SUBPROTOCOL) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        server_codec(subprotocol).decode(data)
    return caught.value.code


# --- version negotiation ------------------------------------------------------------


def test_subprotocol_names() -> None:
    assert PROTOCOL_VERSION == 1
    assert JSON_SUBPROTOCOL == "gchat.v1+json"
    assert MSGPACK_SUBPROTOCOL == "gchat.v1+msgpack"
    assert SUBPROTOCOLS == (MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["gchat.v1+msgpack"], "gchat.v1+msgpack"),
        (["gchat.v1+json"], "gchat.v1+json"),
        (["gchat.v1+json", "gchat.v1+msgpack"], "gchat.v1+json"),  # the client's order wins
        (["gchat.v1+msgpack", "gchat.v1+json"], "gchat.v1+msgpack"),
        (["gchat.v2+msgpack", "gchat.v1+json"], "gchat.v1+json"),
        (["chat", "superchat", "gchat.v1+msgpack"], "gchat.v1+msgpack"),
        ([], None),
        (["gchat.v2+json"], None),
        (["GCHAT.V1+JSON"], None),  # names are case-sensitive
        (["gchat.v1"], None),
        ([" gchat.v1+json"], None),
    ],
)
def test_negotiate(offered: list[str], chosen: str | None) -> None:
    assert negotiate(offered) == chosen
    assert negotiate(tuple(offered)) == chosen


# --- the frame set, and PROTOCOL.md documents all of it ---------------------------------

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def tag(cls: type) -> str:
    return str(cls.__struct_config__.tag)  # type: ignore[attr-defined]


def fields_of(cls: type) -> set[str]:
    names = set(cls.__struct_fields__)  # type: ignore[attr-defined]
    for part in (f.Prekey, f.SignedPrekey, f.Envelope, f.DeviceBundle):
        names |= set(part.__struct_fields__)
    return names


def test_tags_are_unique_and_the_directions_disjoint() -> None:
    client = [tag(cls) for cls in f.CLIENT_FRAME_TYPES]
    server = [tag(cls) for cls in f.SERVER_FRAME_TYPES]
    assert len(set(client)) == len(client)
    assert len(set(server)) == len(server)
    assert not set(client) & set(server)
    assert {"auth", "auth_token", "enroll", "send", "ack"} <= set(client)
    assert {"challenge", "authenticated", "deliver", "queue_empty", "error"} <= set(server)


def test_protocol_md_documents_every_frame_and_field() -> None:
    doc = PROTOCOL_MD.read_text()
    for cls in f.CLIENT_FRAME_TYPES + f.SERVER_FRAME_TYPES:
        assert f"`{tag(cls)}`" in doc, f"frame {tag(cls)} missing from PROTOCOL.md"
        for name in fields_of(cls):
            assert f"`{name}" in doc, f"field {tag(cls)}.{name} missing from PROTOCOL.md"


def test_protocol_md_documents_every_error_and_close_code() -> None:
    doc = PROTOCOL_MD.read_text()
    for code in ErrorCode:
        assert f"`{code.value}`" in doc, f"error code {code.value} missing from PROTOCOL.md"
    for close in CloseCode:
        assert f"| {close.value} " in doc, f"close code {close.value} missing from PROTOCOL.md"


def test_protocol_md_states_the_limits() -> None:
    doc = PROTOCOL_MD.read_text()
    for value in ("262 144", "98 304", "5000", "0 .. 100", "1 .. 1000", "1 .. 64", "1 .. 200"):
        assert value in doc
    assert f"{limits.MAX_FRAME_BYTES:,}".replace(",", " ") in doc
    assert f"{limits.MAX_CIPHERTEXT_BYTES:,}".replace(",", " ") in doc


def test_every_frame_is_tagged_by_type_and_strict() -> None:
    for cls in f.CLIENT_FRAME_TYPES + f.SERVER_FRAME_TYPES:
        config = cls.__struct_config__
        assert config.tag_field == "type"
        assert config.forbid_unknown_fields
    for part in (f.Prekey, f.SignedPrekey, f.Envelope, f.DeviceBundle):
        assert part.__struct_config__.forbid_unknown_fields


def test_requests_carry_a_rid_and_pushes_none() -> None:
    """Every client frame but ack is a request; replies echo a rid, pushes have none."""
    without = {tag(c) for c in f.CLIENT_FRAME_TYPES if "rid" not in c.__struct_fields__}
    assert without == {"ack"}
    pushes = {tag(c) for c in f.SERVER_FRAME_TYPES if "rid" not in c.__struct_fields__}
    assert {"challenge", "deliver", "queue_empty", "prekeys_low"} <= pushes


# --- limits match the schema -----------------------------------------------------------


def test_meta_constraints_are_the_limits() -> None:
    envelopes = field_type(f.Send, "envelopes")
    assert isinstance(envelopes, mi.ListType)
    assert (envelopes.min_length, envelopes.max_length) == (1, limits.MAX_RECIPIENT_DEVICES)
    envelope = envelopes.item_type
    assert isinstance(envelope, mi.StructType)
    ciphertext = next(x.type for x in envelope.fields if x.name == "ciphertext")
    assert isinstance(ciphertext, mi.BytesType)
    assert (ciphertext.min_length, ciphertext.max_length) == (1, limits.MAX_CIPHERTEXT_BYTES)
    for cls in (f.Enroll, f.UploadPrekeys):
        prekeys = field_type(cls, "one_time_prekeys")
        assert isinstance(prekeys, mi.ListType)
        assert prekeys.max_length == limits.MAX_PREKEYS_PER_UPLOAD
    positions = field_type(f.Ack, "positions")
    assert isinstance(positions, mi.ListType)
    assert (positions.min_length, positions.max_length) == (1, limits.MAX_ACK_POSITIONS)
    cmid = field_type(f.Send, "client_message_id")
    assert isinstance(cmid, mi.StrType)
    assert cmid.max_length == limits.MAX_CLIENT_MESSAGE_ID
    token = field_type(f.AuthToken, "token")
    assert isinstance(token, mi.StrType) and token.max_length == limits.MAX_TOKEN
    code = field_type(f.Enroll, "code")
    assert isinstance(code, mi.StrType) and code.max_length == limits.MAX_CODE
    texts: list[tuple[type, str]] = [
        (f.Enroll, "device_name"),
        (f.Enroll, "platform"),
        (f.CreateOfficial, "name"),
    ]
    for text_owner, name in texts:
        text = field_type(text_owner, name)
        assert isinstance(text, mi.Metadata) and text.extra == {"text": "display"}
        assert isinstance(text.type, mi.StrType)
        assert (text.type.min_length, text.type.max_length) == (1, limits.MAX_TEXT)
    for frame_type in f.CLIENT_FRAME_TYPES:
        if "rid" in frame_type.__struct_fields__:
            rid = field_type(frame_type, "rid")
            assert isinstance(rid, mi.IntType)
            assert (rid.ge, rid.le) == (0, limits.MAX_REQUEST_ID)


def test_limit_values() -> None:
    assert limits.MAX_FRAME_BYTES == 256 * 1024
    assert limits.MAX_CIPHERTEXT_BYTES == 96 * 1024
    assert limits.MAX_RECIPIENT_DEVICES == 5000
    assert limits.MAX_GROUP_MEMBERS == 1000
    assert limits.MAX_PREKEYS_PER_UPLOAD == 100
    assert limits.MAX_ACK_POSITIONS == 1000
    assert limits.MAX_REQUEST_ID == 2**31 - 1
    assert limits.MAX_CIPHERTEXT_BYTES < limits.MAX_FRAME_BYTES


def test_config_defaults_respect_the_protocol_limits() -> None:
    config = Config()
    assert config.max_ciphertext_bytes <= limits.MAX_CIPHERTEXT_BYTES
    assert config.max_recipient_devices <= limits.MAX_RECIPIENT_DEVICES


def prekeys(n: int) -> list[dict[str, Any]]:
    return [{"key_id": i, "public_key": KEY} for i in range(n)]


def enroll(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": "enroll",
        "rid": 1,
        "code": "ABCDE-FGHJK-MNPQR-STVWX",
        "identity_key": KEY,
        "signature": SIG,
        "signed_prekey": {"key_id": 1, "public_key": KEY, "signature": SIG},
        "one_time_prekeys": [],
        "device_name": "phone",
        "platform": "ios",
    }
    value.update(changes)
    return value


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
def test_enroll_with_100_prekeys_is_accepted_and_101_refused(subprotocol: str) -> None:
    def wire(n: int) -> bytes | str:
        frame = msgspec.convert(enroll(one_time_prekeys=prekeys(n)), f.Enroll)
        return client_codec(subprotocol).encode(frame)

    assert len(server_codec(subprotocol).decode(wire(100)).one_time_prekeys) == 100  # type: ignore[union-attr]
    raw = enroll(one_time_prekeys=prekeys(101))
    data = (
        msgspec.msgpack.encode(raw)
        if subprotocol == MSGPACK_SUBPROTOCOL
        else msgspec.json.encode(raw).decode()
    )
    assert decode_code(data, subprotocol) == ErrorCode.INVALID_FIELD
    upload = {"type": "upload_prekeys", "rid": 2, "one_time_prekeys": prekeys(101)}
    assert decode_code(msgspec.msgpack.encode(upload)) == ErrorCode.INVALID_FIELD
    upload["one_time_prekeys"] = prekeys(100)
    assert isinstance(
        server_codec(MSGPACK_SUBPROTOCOL).decode(msgspec.msgpack.encode(upload)), f.UploadPrekeys
    )


def send_value(n: int, size: int = 1) -> dict[str, Any]:
    envelope = {"device_id": str(ID), "ciphertext": b"x" * size}
    return {
        "type": "send",
        "rid": 1,
        "client_message_id": "m-1",
        "recipient": str(ID),
        "envelopes": [envelope] * n,
    }


def test_send_envelope_count_bounds_in_the_schema() -> None:
    assert len(valid(f.Send, send_value(limits.MAX_RECIPIENT_DEVICES)).envelopes) == 5000
    refused(f.Send, send_value(limits.MAX_RECIPIENT_DEVICES + 1))
    refused(f.Send, send_value(0))
    # decoded from MessagePack (no frame-size check): the same bound
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode(send_value(5001)), type=f.ClientFrame)


def test_a_5001_envelope_send_is_refused_by_the_codec() -> None:
    value = send_value(limits.MAX_RECIPIENT_DEVICES + 1)
    with pytest.raises(ProtocolError):
        server_codec(MSGPACK_SUBPROTOCOL).decode(msgspec.msgpack.encode(value))
    with pytest.raises(ProtocolError):
        server_codec(JSON_SUBPROTOCOL).decode(msgspec.json.encode(value).decode())


def test_frame_limit_binds_before_recipient_device_limit() -> None:
    """Stated in PROTOCOL.md: even 1-byte ciphertexts for 5000 devices exceed one frame.

    An envelope costs at least ~63 bytes in MessagePack (UUID as a 36-char
    string) and ~70 in JSON, so the practical envelope count per send is
    bounded by MAX_FRAME_BYTES, not MAX_RECIPIENT_DEVICES.
    """
    frame = msgspec.convert(send_value(limits.MAX_RECIPIENT_DEVICES), f.Send)
    for sp in SUBPROTOCOLS:
        data = client_codec(sp).encode(frame)
        assert len(data) > limits.MAX_FRAME_BYTES
        with pytest.raises(FrameTooLarge):
            server_codec(sp).decode(data)
    most = limits.MAX_FRAME_BYTES // len(msgspec.msgpack.encode(send_value(1)["envelopes"][0]))
    assert 4000 <= most < limits.MAX_RECIPIENT_DEVICES


def test_ack_bounds() -> None:
    assert len(valid(f.Ack, {"type": "ack", "positions": list(range(1, 1001))}).positions) == 1000
    refused(f.Ack, {"type": "ack", "positions": list(range(1, 1002))})
    refused(f.Ack, {"type": "ack", "positions": []})
    refused(f.Ack, {"type": "ack", "positions": [0]})
    valid(f.Ack, {"type": "ack", "positions": [2**63 - 1]})
    refused(f.Ack, {"type": "ack", "positions": [2**63]})


@pytest.mark.parametrize(
    ("field", "ok", "bad"),
    [
        ("rid", [0, 2**31 - 1], [-1, 2**31]),
        ("code", ["A", "A" * limits.MAX_CODE], ["", "A" * (limits.MAX_CODE + 1)]),
        ("identity_key", [KEY], [bytes(31), bytes(33), b""]),
        ("signature", [SIG], [bytes(63), bytes(65)]),
        ("device_name", ["x", "ก" * limits.MAX_TEXT], ["", "x" * (limits.MAX_TEXT + 1)]),
        ("platform", ["android"], [""]),
        (
            "signed_prekey",
            [{"key_id": 2**32 - 1, "public_key": KEY, "signature": SIG}],
            [
                {"key_id": 2**32, "public_key": KEY, "signature": SIG},
                {"key_id": -1, "public_key": KEY, "signature": SIG},
                {"key_id": 1, "public_key": KEY},
            ],
        ),
    ],
)
def test_enroll_field_bounds(field: str, ok: list[Any], bad: list[Any]) -> None:
    for value in ok:
        valid(f.Enroll, enroll(**{field: value}))
    for value in bad:
        refused(f.Enroll, enroll(**{field: value}))


def test_text_limits_count_characters_not_bytes() -> None:
    """Thai names: 200 characters are 600 UTF-8 bytes and still allowed."""
    frame = valid(f.CreateOfficial, {"type": "create_official", "rid": 1, "name": "ก" * 200})
    assert len(frame.name.encode()) == 600


@pytest.mark.parametrize("value", ["m", "a" * 64, "Az09_.:-", "2024-05-01T10:00:00.123:abc"])
def test_client_message_id_accepted(value: str) -> None:
    valid(f.Send, send_value(1) | {"client_message_id": value})


@pytest.mark.parametrize("value", ["", "a" * 65, "has space", "ümlaut", "a/b", "a\tb", "\nabc"])
def test_client_message_id_refused(value: str) -> None:
    refused(f.Send, send_value(1) | {"client_message_id": value})


def test_client_message_id_with_trailing_newline_is_refused() -> None:
    refused(f.Send, send_value(1) | {"client_message_id": "abc\n"})


def test_token_bounds() -> None:
    valid(f.AuthToken, {"type": "auth_token", "rid": 1, "token": "t" * limits.MAX_TOKEN})
    refused(f.AuthToken, {"type": "auth_token", "rid": 1, "token": "t" * (limits.MAX_TOKEN + 1)})
    refused(f.AuthToken, {"type": "auth_token", "rid": 1, "token": ""})


def test_optional_fields_default() -> None:
    official = valid(f.CreateOfficial, {"type": "create_official", "rid": 1, "name": "n"})
    assert official.agency_id is None
    upload = valid(f.UploadPrekeys, {"type": "upload_prekeys", "rid": 1, "one_time_prekeys": []})
    assert upload.signed_prekey is None
    error = valid(f.Error, {"type": "error", "rid": None, "code": "x", "message": "y"})
    assert (error.missing, error.stale, error.retry_after) == ([], [], None)
    refused(f.Error, {"type": "error", "code": "x", "message": "y"})  # rid: null, not absent


def test_bundle_one_time_prekey_may_be_null() -> None:
    device = {
        "device_id": str(ID),
        "certificate": b"c" * 153,
        "signed_prekey": {"key_id": 1, "public_key": KEY, "signature": SIG},
        "one_time_prekey": None,
    }
    bundle = {"type": "bundle", "rid": 1, "official_id": str(ID), "devices": [device]}
    decoded = client_codec(JSON_SUBPROTOCOL).decode(json.dumps(msgspec.to_builtins(bundle)))
    assert isinstance(decoded, f.Bundle)
    assert decoded.devices[0].one_time_prekey is None
