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
from gchat.audit import merkle
from gchat.audit.verify import key_id
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
    v["merkle"] = audit_vectors()
    return v


def audit_vectors() -> dict[str, Any]:
    """RFC 9162 trees, proofs and signed heads from gchat/audit/merkle.py, with
    negative cases whose verdict (False) is Python's too."""
    entries = [
        json.dumps({"kind": "message.accepted", "time": f"2026-12-04T09:{i:02d}:00.000000Z",
                    "v": 1, "details": {"note": "ทดสอบ"}},
                   separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        for i in range(13)
    ]
    leaves = [merkle.leaf_hash(e.encode()) for e in entries]
    roots = {n: merkle.root_from_leaf_hashes(leaves[:n]) for n in range(0, 14)}
    inclusion = []
    for size in (1, 2, 3, 5, 7, 8, 13):
        for index in sorted({0, size // 2, size - 1}):
            proof = merkle.inclusion_proof(leaves[:size], index)
            assert merkle.verify_inclusion(leaves[index], index, size, proof, roots[size])
            inclusion.append({"index": index, "size": size, "proof": [h(p) for p in proof]})
    consistency = []
    for old, new in ((0, 5), (1, 13), (4, 13), (8, 13), (5, 7), (6, 8), (7, 13), (13, 13), (3, 3)):
        proof = merkle.consistency_proof(leaves[:new], old)
        assert merkle.verify_consistency(old, new, roots[old], roots[new], proof)
        consistency.append({"old": old, "new": new, "proof": [h(p) for p in proof]})

    def inc(index: int, size: int, proof: list[bytes], leaf: bytes) -> bool:
        return merkle.verify_inclusion(leaf, index, size, proof, roots[size])

    p5 = merkle.inclusion_proof(leaves, 5)
    altered = merkle.leaf_hash(entries[5].replace("ทดสอบ", "ทดสอบ!").encode())
    bad_inclusion = [
        {"why": "wrong index", "index": 4, "size": 13, "leaf": h(leaves[5]),
         "proof": [h(p) for p in p5]},
        {"why": "truncated proof", "index": 5, "size": 13, "leaf": h(leaves[5]),
         "proof": [h(p) for p in p5[:-1]]},
        {"why": "extra hash", "index": 5, "size": 13, "leaf": h(leaves[5]),
         "proof": [h(p) for p in p5 + [leaves[0]]]},
        {"why": "altered leaf", "index": 5, "size": 13, "leaf": h(altered),
         "proof": [h(p) for p in p5]},
        {"why": "index past the tree", "index": 13, "size": 13, "leaf": h(leaves[5]),
         "proof": [h(p) for p in p5]},
        {"why": "wrong tree size", "index": 5, "size": 12, "leaf": h(leaves[5]),
         "proof": [h(p) for p in p5]},
    ]
    for case in bad_inclusion:
        size = case["size"]
        assert not inc(case["index"], size, [bytes.fromhex(x) for x in case["proof"]],
                       bytes.fromhex(case["leaf"]))
    c = merkle.consistency_proof(leaves, 6)
    bad_consistency = [
        {"why": "wrong old size", "old": 5, "new": 13, "proof": [h(p) for p in c]},
        {"why": "truncated proof", "old": 6, "new": 13, "proof": [h(p) for p in c[:-1]]},
        {"why": "altered hash", "old": 6, "new": 13,
         "proof": [h(c[0][:-1] + bytes([c[0][-1] ^ 1]))] + [h(p) for p in c[1:]]},
        {"why": "empty proof", "old": 6, "new": 13, "proof": []},
    ]
    for case in bad_consistency:
        assert not merkle.verify_consistency(
            case["old"], case["new"], roots[case["old"]], roots[13],
            [bytes.fromhex(x) for x in case["proof"]])

    key = IdentityKeyPair.from_seed(seed(80))
    head = merkle.TreeHead(tree_size=13, root_hash=roots[13], timestamp_ms=1_796_374_800_123)
    message = head.signing_message()
    older = merkle.TreeHead(tree_size=8, root_hash=roots[8], timestamp_ms=1_796_371_200_000)
    return {
        "entries": entries, "leaf_hashes": [h(x) for x in leaves],
        "roots": {str(n): h(r) for n, r in roots.items()},
        "node_hash": {"left": h(leaves[0]), "right": h(leaves[1]),
                      "hash": h(merkle.node_hash(leaves[0], leaves[1]))},
        "inclusion": inclusion, "consistency": consistency,
        "bad_inclusion": bad_inclusion, "bad_consistency": bad_consistency,
        "tree_head": {"public_key": h(key.public_key), "key_id": h(key_id(key.public_key)),
                      "tree_size": 13, "timestamp_ms": head.timestamp_ms,
                      "root_hash": h(roots[13]), "message": h(message),
                      "signature": h(key.sign(message)),
                      "other_key": h(IdentityKeyPair.from_seed(seed(81)).public_key),
                      "older": {"tree_size": 8, "timestamp_ms": older.timestamp_ms,
                                "root_hash": h(roots[8]),
                                "signature": h(key.sign(older.signing_message()))}},
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(make(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
