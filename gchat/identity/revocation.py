"""Revocation broadcast: close a revoked device's connections on every node.

Refusing a revoked device needs no broadcast: ``gchat.identity.auth`` checks the
device's and its official's status in PostgreSQL at every authentication,
token or signature, on every node. What needs the broker is the device's
*open* connection, wherever it is: after the caller has changed the status
in the database (device ``revoked``, official ``suspended``), it calls
``devices_revoked`` here, which publishes
``SignalKind.REVOKED`` on the devices' channels; the node holding each
connection closes it with 4403. With Redis that takes one pub/sub hop
(milliseconds); in a single node it is a direct call.

Order matters: status first, broadcast second, so that a device that
reconnects between the two is refused by the status check.
"""

import logging
from collections.abc import Iterable
from uuid import UUID

from gchat.runtime.broker import Broker, Signal, SignalKind
from gchat.store import devices
from gchat.store.database import Database

log = logging.getLogger("gchat.identity.revocation")


class Revocations:
    def __init__(self, db: Database, broker: Broker) -> None:
        self._db = db
        self._broker = broker

    async def devices_revoked(self, device_ids: Iterable[UUID]) -> None:
        """Close these devices' connections on every node (status already changed)."""
        ids = list(device_ids)
        if ids:
            await self._broker.publish(ids, Signal(SignalKind.REVOKED))
            log.info("revocation broadcast devices=%s", ",".join(map(str, ids)))

    async def sweep(self) -> list[UUID]:
        """Close this node's connections of devices no longer usable; returns them.

        The broadcast is a hint and can be lost (Redis down when it was
        published, a node cut off): every node also compares, now and then,
        the devices connected to it with their status in PostgreSQL.
        """
        connected = self._broker.devices()
        if not connected:
            return []
        stale = await devices.unusable(self._db.pool, connected)
        if stale:
            self._broker.deliver(stale, Signal(SignalKind.REVOKED))
            log.warning("revocation sweep closed devices=%s", ",".join(map(str, stale)))
        return stale
