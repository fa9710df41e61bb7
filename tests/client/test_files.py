"""The file reference in a message body, and names from senders (gchat/client/files.py)."""

import uuid

import pytest

from gchat.client.files import FileRef, decode_body, encode_body, safe_name


def test_a_file_body_round_trips_and_text_stays_text() -> None:
    ref = FileRef(
        id=uuid.uuid4(), key=bytes(32), sha256=bytes(range(32)), size=5, name="a.pdf",
        media_type="application/pdf",
    )
    body = encode_body(ref, "caption ไทย")
    assert body[:1] == b"\xff"
    assert decode_body(body) == ("caption ไทย", ref)
    assert decode_body("สวัสดี".encode()) == ("สวัสดี", None)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        b"\xff\x81\xa1x\x01",  # a map, but not a file body
        # a reference whose key is too short
        encode_body(
            FileRef(id=uuid.uuid4(), key=b"k", sha256=bytes(32), size=1, name="n", media_type="t")
        ),
    ],
)
def test_malformed_file_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="malformed file reference"):
        decode_body(body)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\win.ini", "win.ini"),
        (".bashrc", "bashrc"),
        ("a\x00b\nc.txt", "abc.txt"),
        ("", "attachment"),
        ("..", "attachment"),
        ("/", "attachment"),
        ("รายงาน.pdf", "รายงาน.pdf"),
    ],
)
def test_names_from_senders_cannot_leave_the_folder(given: str, kept: str) -> None:
    assert safe_name(given) == kept


def test_long_names_are_cut_to_255_bytes_on_a_character_boundary() -> None:
    name = safe_name("ก" * 200)  # 3 bytes each
    assert len(name.encode()) <= 255 and name == "ก" * 85
