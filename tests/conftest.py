"""Test-suite set-up. The fixtures themselves live in ``tests/fixtures.py``
(one module, loaded here for every test); plain helpers in ``tests/support.py``.

Running the suite: ``make test`` (parallel, ``PYTEST_WORKERS`` processes) or
``make test-fast`` (skips tests marked ``slow``: real multi-process clusters,
``make run``, the embedded PostgreSQL). Under pytest-xdist every worker is a
process of its own, with its own databases (named by pid), Redis prefixes,
ports (see ``tests.support.free_port``) and ``tmp_path``. ``make test`` uses
``--dist loadfile``: a module's tests run in order on one worker, so
module-scoped fixtures (a browser, a node) are made once and tests that tell
one story in order (tests/web/test_browser_chat.py) keep working.
(``loadgroup`` with ``xdist_group`` markers would balance better, but
pytest-xdist 3.8 cannot regroup tests under pytest 9.)
"""

pytest_plugins = ["tests.fixtures"]
