"""Browser tests: Debian's chromium through Playwright, against a real node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.harness import Loop, Node, chromium_path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    # Browsers cannot be downloaded here: use the distribution's chromium.
    return {**browser_type_launch_args, "executable_path": chromium_path()}


@pytest.fixture(scope="module")
def node(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp: Path = tmp_path_factory.mktemp("web-node")
    tmp.chmod(0o755)
    started = Node(pg_admin_dsn, tmp)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    started = Loop()
    try:
        yield started
    finally:
        started.close()
