"""Browser tests: Debian's chromium through Playwright, against a real node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserType, Playwright, sync_playwright

from tests.fixtures import TestDatabases
from tests.web.harness import Loop, Node, chromium_path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    # Browsers cannot be downloaded here: use the distribution's chromium.
    return {**browser_type_launch_args, "executable_path": chromium_path()}


# Playwright's sync API keeps an event loop running in the main thread while
# it is started; pytest-playwright starts it once per session, which would
# break every pytest-asyncio test collected after these. So Playwright and
# its browser live for one module here (one browser per module, shared by
# its tests), and are gone when other tests run.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def browser_type(playwright: Playwright) -> BrowserType:
    return playwright.chromium


@pytest.fixture(scope="module")
def browser(browser_type: BrowserType, browser_type_launch_args: dict) -> Iterator[Browser]:
    launched = browser_type.launch(**browser_type_launch_args)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict:
    return {}


@pytest.fixture(scope="module")
def node(test_databases: TestDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp: Path = tmp_path_factory.mktemp("web-node")
    tmp.chmod(0o755)
    started = Node(test_databases, tmp)
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
