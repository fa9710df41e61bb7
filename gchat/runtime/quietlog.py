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
in an outage and never get a traceback. Anything else is a bug: its first
occurrence per class is logged with the full traceback, repeats only
counted, like outages.

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
        key = (what, type(error).__name__)
        now = self._clock()
        current = self._active.get(key)
        if current is None:
            self._active[key] = _Class(started=now, last_line=now)
            if is_outage(error):
                self._log.warning("%s failed: %s: %s", what, key[1], _short(error))
            else:
                self._log.error("%s failed unexpectedly", what, exc_info=error)
            return
        current.total += 1
        current.unreported += 1
        if now - current.last_line >= self._interval:
            self._log.warning(
                "%s still failing: %s, %d more in the last %.0f s",
                what, key[1], current.unreported, now - current.last_line,
            )
            current.last_line = now
            current.unreported = 0

    def recovered(self, what: str) -> None:
        """``what`` succeeded: close its open failure classes with one line each."""
        if not self._active:
            return
        for key in [k for k in self._active if k[0] == what]:
            current = self._active.pop(key)
            self._log.warning(
                "%s recovered after %d failures (%s) in %.1f s",
                what, current.total, key[1], self._clock() - current.started,
            )

    def failing(self, what: str) -> bool:
        """True while ``what`` has an open failure class."""
        return any(k[0] == what for k in self._active)


def _short(error: BaseException) -> str:
    """The error's message on one line, bounded (never a multi-line dump)."""
    text = " ".join(str(error).split())
    return text[:200] if text else "-"
