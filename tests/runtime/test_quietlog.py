"""QuietLog: an outage is a handful of lines, a bug is one traceback (pure unit test)."""

import logging

import asyncpg
import pytest

from gchat.runtime.quietlog import QuietLog, is_outage
from tests.support import FakeClock


def test_a_thousand_refused_commits_are_three_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    quiet = QuietLog(logging.getLogger("t.quiet"), interval=10, clock=clock)
    caplog.set_level(logging.DEBUG, logger="t.quiet")
    for i in range(1000):
        clock.now = i * 0.015  # 15 s of failures
        quiet.failure("commit", ConnectionRefusedError(111, "Connection refused"))
    quiet.recovered("commit")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("commit failed: ConnectionRefusedError")
    assert "still failing" in lines[1] and "more in the last 10 s" in lines[1]
    assert lines[2].startswith("commit recovered after 1000 failures")
    assert all(r.exc_info is None for r in caplog.records)  # no traceback for an outage


def test_an_unexpected_error_gets_one_traceback(caplog: pytest.LogCaptureFixture) -> None:
    quiet = QuietLog(logging.getLogger("t.bug"), clock=FakeClock(0.0))
    caplog.set_level(logging.DEBUG, logger="t.bug")
    for _ in range(50):
        try:
            raise KeyError("bug")
        except KeyError as error:
            quiet.failure("frame", error)
    assert [r.exc_info is not None for r in caplog.records] == [True]


def test_outage_errors_are_recognised_through_their_cause() -> None:
    assert is_outage(asyncpg.exceptions.CannotConnectNowError("starting up"))
    assert is_outage(asyncpg.InterfaceError("connection is closed"))
    wrapped = RuntimeError("batch failed")
    wrapped.__cause__ = ConnectionResetError()
    assert is_outage(wrapped)
    assert not is_outage(ValueError("bug"))


def test_an_episode_ends_by_itself_after_a_quiet_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(0.0)
    quiet = QuietLog(logging.getLogger("t.episodes"), interval=10, clock=clock)
    caplog.set_level(logging.DEBUG, logger="t.episodes")
    for start in (0.0, 100.0):  # two outages, nobody calls recovered()
        for i in range(20):
            clock.now = start + i * 0.1
            quiet.failure("delivery", TimeoutError())
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" ")[1] for line in lines] == ["failed:", "recovered", "failed:"], lines
    assert "after 20 failures" in lines[1]
