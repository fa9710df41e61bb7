"""Test-suite set-up. The fixtures themselves live in ``tests/fixtures.py``
(one module, loaded here for every test); plain helpers in ``tests/support.py``.

Running the suite: ``make test`` (parallel, ``PYTEST_WORKERS`` processes) or
``make test-fast`` (skips tests marked ``slow``: real multi-process clusters,
``make run``, the embedded PostgreSQL). Under pytest-xdist every worker is a
process of its own, with its own databases (named by pid), Redis prefixes,
ports (see ``tests.support.free_port``) and ``tmp_path``.
"""

from tests.fixtures import TEST_DB_PREFIX
from tests.fixtures import create_database as _create_database
from tests.fixtures import drop_databases as _drop_databases
from tests.support import dsn_with_database, free_port, run_sync

pytest_plugins = ["tests.fixtures"]

# Kept importable from here for tests written before tests/support.py and
# tests/fixtures.py; new code imports from those.
__all__ = [
    "TEST_DB_PREFIX",
    "_create_database",
    "_drop_databases",
    "dsn_with_database",
    "free_port",
    "run_sync",
]
