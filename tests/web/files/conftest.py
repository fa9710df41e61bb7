"""The fixtures both file modules use: three officials and Anong's phone.

Module-scoped, so each module (a worker of its own in a parallel run) has
its own node, team and enrolled page.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.web import ui
from tests.web.files.support import enrolled_page
from tests.web.harness import Loop, Node, Team


@pytest.fixture(scope="module")
def team(node: Node, loop: Loop) -> Team:
    made = Team(node, loop)
    made.admin.close()  # not needed again: nothing of it is connected when the node dies
    return made


@pytest.fixture(scope="module")
def anong(browser: Browser, node: Node, team: Team) -> Iterator[Page]:
    with enrolled_page(browser, node, team.anong_code, "โทรศัพท์อนงค์",
                       viewport=ui.PHONE_LARGE, is_mobile=True) as page:
        yield page
