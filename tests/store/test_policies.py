"""Message scopes: the wire, the column and the store's ranking name the same values.

The store may not import protocol/ (the layering contracts), so the scope
names live in three places that cannot share a constant: the frames'
``MessageScope``, the column's CHECK in migration 0002, and the store's
ranking (``policies.SCOPES``, strictest first). This pins them together.
"""

import re
from typing import get_args

from gchat.store import policies
from protocol import frames as f
from tests.test_make_run import REPO


def test_the_store_ranks_exactly_the_scopes_the_protocol_carries() -> None:
    assert get_args(f.MessageScope) == policies.SCOPES == ("agency", "ministry", "all")


def test_the_column_allows_exactly_those_scopes() -> None:
    sql = (REPO / "migrations" / "0002_directory.sql").read_text()
    [allowed] = re.findall(r"message_scope\s+text CHECK \(message_scope IN \(([^)]*)\)\)", sql)
    assert tuple(v.strip().strip("'") for v in allowed.split(",")) == policies.SCOPES

