"""Signals to devices wherever they are connected: wake-ups and notices.

The broker carries hints, never messages: PostgreSQL holds the envelopes,
and a lost signal only delays delivery until the next one (or reconnect).
``InProcessBroker`` serves a single node; the Redis broker for many nodes
implements the same interface.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from uuid import UUID

log = logging.getLogger("gchat.broker")


class SignalKind(Enum):
    WAKE = "wake"  # the device's inbox has new envelopes
    PREKEYS_LOW = "prekeys_low"  # value: one-time prekeys left
    CONNECTED = "connected"  # value: id of the newest connection (others yield)
    REVOKED = "revoked"  # the device or its official may no longer connect


@dataclass(frozen=True)
class Signal:
    kind: SignalKind
    value: int | str | None = None


Listener = Callable[[Signal], None]


class InProcessBroker:
    """Delivers signals to listeners in this process, synchronously."""

    def __init__(self) -> None:
        self._listeners: defaultdict[UUID, set[Listener]] = defaultdict(set)

    def subscribe(self, device_id: UUID, listener: Listener) -> None:
        self._listeners[device_id].add(listener)

    def unsubscribe(self, device_id: UUID, listener: Listener) -> None:
        listeners = self._listeners.get(device_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[device_id]

    async def publish(self, device_ids: Iterable[UUID], signal: Signal) -> None:
        for device_id in device_ids:
            for listener in list(self._listeners.get(device_id, ())):
                try:
                    listener(signal)
                except Exception:
                    log.exception("listener failed device=%s signal=%s", device_id, signal.kind)

    async def close(self) -> None:
        self._listeners.clear()
