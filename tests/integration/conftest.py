"""Integration tests: a real node per test (fixtures ``node``/``world`` in tests/fixtures.py).

The helpers moved to ``tests.support``; these names stay importable from here
for tests written before the move.
"""

from tests.fixtures import node, world
from tests.support import World, node_config, url_of

__all__ = ["World", "node", "node_config", "url_of", "world"]
