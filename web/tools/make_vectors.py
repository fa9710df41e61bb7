"""Known answers from the Python implementation for the web app's unit tests.

Run from the repository root: ``python web/tools/make_vectors.py`` writes
``web/test/vectors.json`` (checked in). Every value is computed here by the
Python code (crypto/, protocol/, gchat/client/sdk.py's content encoding) from
fixed keys; the JavaScript tests compute the same from the same inputs, or
decrypt what Python encrypted, and must agree byte for byte.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from crypto import kdf
from crypto.certificate import issue_certificate
from crypto.identity import IdentityKeyPair, auth_message
from crypto.prekeys import PrekeyPair, sign_prekey, signed_prekey_message
from crypto.safety_number import fingerprint_digits, safety_number
from crypto.sender_keys import SenderKeyState
from crypto.session import Session
from crypto.x3dh import PrekeyBundle, x3dh_initiate
from gchat.client.sdk import Content, _content_encoder
from protocol.frames import GroupMember, members_digest

OUT = Path(__file__).resolve().parents[1] / "test" / "vectors.json"


def seed(n: int) -> bytes:
    return bytes((n + i) % 256 for i in range(32))


def h(b: bytes) -> str:
    return b.hex()


def make() -> dict[str, Any]:
    v: dict[str, Any] = {}
    ikm, salt = seed(1), seed(2)
    v["hkdf"] = {"ikm": h(ikm), "salt": h(salt), "info": "gchat.test", "length": 80,
                 "okm": h(kdf.hkdf_sha256(ikm, salt, b"gchat.test", 80))}
    mk, ck = kdf.chain_kdf(seed(3))
    rk, ck2 = kdf.root_kdf(seed(4), seed(5))
    v["kdf"] = {"ck": h(seed(3)), "mk": h(mk), "next_ck": h(ck),
                "rk": h(seed(4)), "dh": h(seed(5)), "new_rk": h(rk), "chain": h(ck2)}

    alice, bob = IdentityKeyPair.from_seed(seed(10)), IdentityKeyPair.from_seed(seed(20))
    spk, opk, eph = PrekeyPair(7, seed(30)), PrekeyPair(99, seed(40)), PrekeyPair(0, seed(50))
    spk_sig = sign_prekey(bob, spk)
    v["auth_message"] = {"server_id": "gchat", "nonce": h(bytes(range(32))),
                         "message": h(auth_message("gchat", bytes(range(32)))),
                         "identity_seed": h(seed(10)),
                         "signature": h(alice.sign(auth_message("gchat", bytes(range(32)))))}
    v["signed_prekey"] = {"identity_public": h(bob.public_key), "key_id": 7,
                          "public_key": h(spk.public_key),
                          "message": h(signed_prekey_message(7, spk.public_key)),
                          "signature": h(spk_sig)}
    bundle = PrekeyBundle(bob.public_key, 7, spk.public_key, spk_sig, 99, opk.public_key)
    init = x3dh_initiate(alice, bundle, ephemeral=eph)
    v["x3dh"] = {"alice_seed": h(seed(10)), "bob_seed": h(seed(20)), "spk_private": h(seed(30)),
                 "opk_private": h(seed(40)), "ephemeral_private": h(seed(50)),
                 "spk_signature": h(spk_sig), "sk": h(init.shared_key),
                 "ad": h(init.associated_data), "header": h(init.header.to_bytes())}

    # A Python session's messages, for the browser to accept and decrypt.
    session = Session.initiate(alice, bundle)
    first = session.encrypt("สวัสดีครับ".encode())
    second = session.encrypt(b"second, still a prekey message")
    v["session"] = {"bob_seed": h(seed(20)), "spk_id": 7, "spk_private": h(seed(30)),
                    "opk_id": 99, "opk_private": h(seed(40)),
                    "messages": [h(first), h(second)],
                    "plaintexts": ["สวัสดีครับ", "second, still a prekey message"]}

    sender = SenderKeyState.generate(5)
    distribution = sender.distribution_message()
    group = [sender.encrypt(f"กลุ่ม {i}".encode()) for i in range(3)]
    v["sender_key"] = {"distribution": h(distribution), "messages": [h(m) for m in group],
                       "plaintexts": [f"กลุ่ม {i}" for i in range(3)]}

    directory = IdentityKeyPair.from_seed(seed(60))
    official, agency, device = (uuid.UUID(int=1 << 100 | 1), uuid.UUID(int=2 << 100 | 2),
                                uuid.UUID(int=3 << 100 | 3))
    cert = issue_certificate(directory, official, agency, device, alice.public_key, 1_764_000_000)
    v["certificate"] = {"directory_public": h(directory.public_key), "bytes": h(cert.to_bytes()),
                        "official_id": str(official), "agency_id": str(agency),
                        "device_id": str(device), "identity_key": h(alice.public_key),
                        "issued_at": 1_764_000_000}

    keys_a, keys_b = [alice.public_key, seed(70)], [bob.public_key]
    v["safety_number"] = {"official_a": str(official), "keys_a": [h(k) for k in keys_a],
                          "official_b": str(agency), "keys_b": [h(k) for k in keys_b],
                          "half_a": fingerprint_digits(official, keys_a),
                          "number": safety_number(official, keys_a, agency, keys_b)}

    members = [GroupMember(official_id=uuid.UUID(int=9 - i), agency_id=agency, admin=i == 0)
               for i in range(3)]
    v["members_digest"] = {"members": [{"official_id": str(m.official_id),
                                        "agency_id": str(m.agency_id), "admin": m.admin}
                                       for m in members],
                           "digest": h(members_digest(members))}

    plain = Content(body="ทดสอบ".encode(), certificate=cert.to_bytes())
    dist = Content(body=b"", certificate=cert.to_bytes(), sender_key=distribution,
                   conversation_id=official)
    v["content"] = {"plain": h(_content_encoder.encode(plain)),
                    "distribution": h(_content_encoder.encode(dist)),
                    "conversation_id": str(official)}
    return v


if __name__ == "__main__":
    OUT.write_text(json.dumps(make(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
