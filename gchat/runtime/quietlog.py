"""Quiet logs in an outage: one line per failure class per interval, with a count.

When PostgreSQL or Redis goes away, every request that needs it fails the
same way; a traceback per request buries the one line an operator needs
(thousands of them for a ten-second outage). ``QuietLog`` turns a stream of
failures into: one WARNING when a class of failure starts (what failed and
the error's type, no traceback), at most one summary line per interval
while it lasts ("... 412 more in the last 10 s"), and one line when it ends
("... recovered after 1,040 failures"). A failure class is the operation
plus the error's type.

Errors are told apart by ``is_outage``: connection refused or lost,
timeouts, a database that is starting or shutting down. Those are expected
in an outage and never get a traceback, and whatever mix of them one activity
meets (refused, reset, "the database system is shutting down", "starting
up") is one episode. Anything else is a bug: its first occurrence per
error type is logged with the full traceback, repeats only counted.

Owners that know when things work again call ``recovered``; for the
others an episode ends by itself after a whole interval without failures
(its closing line is then written when the next episode starts).

One QuietLog is made per owner (a committer, a sequencer, a connection
handler table) with its own logger, so the lines say where they came from.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import redis.exceptions

#: Errors that mean "a service we depend on is unreachable", not "a bug".
_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, ...
    TimeoutError,
    asyncpg.PostgresConnectionError,  # includes CannotConnectNowError
    asyncpg.InterfaceError,  # "connection is closed", "released back to the pool"
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    # "cannot switch to state 15; another operation is in progress": what a
    # COMMIT meets when the server ended the session under a running query.
    asyncpg.InternalClientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def is_outage(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) says a dependency is unreachable."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 5:
        if isinstance(current, _OUTAGE_TYPES):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


@dataclass
class _Class:
    started: float
    last_line: float
    last_seen: float
    total: int = 1
    unreported: int = 0


class QuietLog:
    """Failures of one owner, logged once per class and interval."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._active: dict[tuple[str, str], _Class] = {}

    def failure(self, what: str, error: BaseException) -> None:
        """Record that ``what`` failed with ``error``; logs only when it should."""
        # Every way of losing a dependency (refused, reset, "shutting down",
        # "starting up") is one outage; a bug is its own class per type.
        outage = is_outage(error)
        key = (what, "outage" if outage else type(error).__name__)
        now = self._clock()
        current = self._active.get(key)
        if current is not None and now - current.last_seen >= self._interval:
            # Quiet for a whole interval with nobody calling recovered():
            # that episode is over; this failure starts a new one.
            self._close(key, current)
            current = None
        if current is None:
            self._active[key] = _Class(started=now, last_line=now, last_seen=now)
            if outage:
                self._log.warning("%s failed: %s: %s", what, type(error).__name__, _short(error))
            else:
                self._log.error("%s failed unexpectedly", what, exc_info=error)
            return
        current.total += 1
        current.unreported += 1
        current.last_seen = now
        if now - current.last_line >= self._interval:
            self._log.warning(
                "%s still failing: %s, %d more in the last %.0f s",
                what,
                type(error).__name__,
                current.unreported,
                now - current.last_line,
            )
            current.last_line = now
            current.unreported = 0

    def recovered(self, what: str) -> None:
        """``what`` succeeded: close its open failure classes with one line each."""
        if not self._active:
            return
        for key in [k for k in self._active if k[0] == what]:
            self._close(key, self._active[key])

    def _close(self, key: tuple[str, str], current: _Class) -> None:
        del self._active[key]
        self._log.warning(
            "%s recovered after %d failures (%s) in %.1f s",
            key[0],
            current.total,
            key[1],
            current.last_seen - current.started,
        )

    def failing(self, what: str) -> bool:
        """True while ``what`` has an open failure class."""
        return any(k[0] == what for k in self._active)


def _short(error: BaseException) -> str:
    """The error's message on one line, bounded (never a multi-line dump)."""
    text = " ".join(str(error).split())
    return text[:200] if text else "-"


class QuietFilter(logging.Filter):
    """The same treatment for a library's own log lines (asyncpg's pool).

    asyncpg logs "Failed to restore the pool connection floor; retrying"
    with a full traceback every second while PostgreSQL is down. Attached
    to that logger, this filter drops the traceback when the error is an
    outage (keeping its type and message on the line) and lets one record
    of each message through per interval, with the number suppressed.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_outage(error):
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {_short(error)}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            key: tuple[str, object] = (record.name, f"{record.msg}"[:80])
        else:
            key = (record.name, record.msg)
        now = self._clock()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self._interval:
            self._last[key] = (last, suppressed + 1)
            return False
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} more like this suppressed)"
            record.args = None
        self._last[key] = (now, 0)
        return True
