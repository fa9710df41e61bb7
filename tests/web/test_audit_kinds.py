"""The audit console offers the event kinds the node records: its list
(web/src/console/audit/auditor.ts) is the Python client's (gchat audit kinds),
which tests/cli checks against every kind in the server's code."""

import re

from gchat.client.audit_cli import KINDS
from tests.web.harness import WEB


def test_the_console_offers_exactly_the_kinds_the_node_records() -> None:
    source = (WEB / "src" / "console" / "audit" / "auditor.ts").read_text(encoding="utf-8")
    block = re.search(r"export const KINDS: readonly string\[\] = \[(.*?)\];", source, re.S)
    assert block is not None, "KINDS not found in auditor.ts"
    assert re.findall(r'"([a-z_.]+)"', block.group(1)) == list(KINDS)
