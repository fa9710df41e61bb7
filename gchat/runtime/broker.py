"""Signals to devices wherever they are connected: wake-ups and notices.

The broker carries hints, never messages: PostgreSQL holds the envelopes,
and a lost signal only delays delivery until the next one (or reconnect).
``InProcessBroker`` serves a single process. Across processes,
``gchat.runtime.redis_broker.RedisBroker`` (Redis pub/sub, many nodes) and
``gchat.runtime.postgres_broker.PostgresBroker`` (LISTEN/NOTIFY, workers
sharing a database) carry signals; their common recovery rules are
``gchat.runtime.relayed_broker.RelayedBroker``'s. All implement ``Broker``.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol
from uuid import UUID

log = logging.getLogger("gchat.runtime.broker")


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


class Broker(Protocol):
    """Where connections listen for their device's signals, and who may send them.

    ``subscribe``/``unsubscribe`` are synchronous (a connection registers a
    listener; any network subscription happens behind it). ``publish``
    reaches every listener of those devices on whichever node they are.
    ``healthy`` is False while signals from other nodes may be lost (Redis
    down): the broker then wakes its local listeners on its own so they
    re-read their inbox from PostgreSQL.
    """

    @property
    def healthy(self) -> bool: ...

    async def start(self) -> None: ...

    def subscribe(self, device_id: UUID, listener: Listener) -> None: ...

    def unsubscribe(self, device_id: UUID, listener: Listener) -> None: ...

    async def publish(
        self, device_ids: Iterable[UUID], signal: Signal, *, local: bool = True
    ) -> None:
        """Signal these devices on every node; with ``local=False`` on the
        other nodes only (this node's connections were already given what the
        signal would have made them read)."""
        ...

    def devices(self) -> list[UUID]:
        """The devices with a listener on this node."""
        ...

    def has_listeners(self, device_id: UUID) -> bool:
        """Whether this device has a listener (a live connection) on this node."""
        ...

    async def connected(self, device_ids: Iterable[UUID]) -> set[UUID]:
        """Those of these devices with a live connection on any node.

        Best effort (who to push to, not who may read): a node that cannot
        ask the others answers for itself alone.
        """
        ...

    def deliver(self, device_ids: Iterable[UUID], signal: Signal) -> None:
        """Signal this node's listeners of these devices only."""
        ...

    async def close(self) -> None: ...


class InProcessBroker:
    """Delivers signals to listeners in this process, synchronously."""

    def __init__(self) -> None:
        self._listeners: defaultdict[UUID, set[Listener]] = defaultdict(set)

    @property
    def healthy(self) -> bool:
        return True  # nothing between the publisher and the listeners can fail

    async def start(self) -> None:
        return None

    def subscribe(self, device_id: UUID, listener: Listener) -> None:
        self._listeners[device_id].add(listener)

    def unsubscribe(self, device_id: UUID, listener: Listener) -> None:
        listeners = self._listeners.get(device_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[device_id]

    def has_listeners(self, device_id: UUID) -> bool:
        return device_id in self._listeners

    def devices(self) -> list[UUID]:
        """The devices with a listener here (a snapshot)."""
        return list(self._listeners)

    async def connected(self, device_ids: Iterable[UUID]) -> set[UUID]:
        """The devices listening here: a single node has no others."""
        return {d for d in device_ids if d in self._listeners}

    def deliver(self, device_ids: Iterable[UUID], signal: Signal) -> None:
        """Call the listeners of these devices now; a failing listener is logged."""
        for device_id in device_ids:
            for listener in list(self._listeners.get(device_id, ())):
                try:
                    listener(signal)
                except Exception:
                    log.exception("listener failed device=%s signal=%s", device_id, signal.kind)

    async def publish(
        self, device_ids: Iterable[UUID], signal: Signal, *, local: bool = True
    ) -> None:
        if local:
            self.deliver(device_ids, signal)

    async def close(self) -> None:
        self._listeners.clear()
