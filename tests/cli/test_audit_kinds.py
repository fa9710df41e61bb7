"""``gchat audit query --kind`` refuses unknown kinds, so its list must hold
every kind the server records: read them from the server's source."""

import re
from pathlib import Path

from gchat.client.audit_cli import KINDS

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("admin", "audit", "auth", "conversation", "device", "keys", "message")
LITERAL = re.compile('"((?:' + "|".join(FAMILIES) + r')\.[a-z_]+)"')


def test_every_recorded_kind_is_known() -> None:
    found: set[str] = set()
    for path in (REPO / "gchat").rglob("*.py"):
        if "client" in path.parts:
            continue
        text = path.read_text()
        found |= set(LITERAL.findall(text))
    assert found, "no kinds found: has the source moved?"
    assert found <= set(KINDS), sorted(found - set(KINDS))
    # the membership kinds built with an f-string: removed and left
    assert {"conversation.members_removed", "conversation.members_left"} <= set(KINDS)
