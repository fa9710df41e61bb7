"""Web Push subscriptions: one per device, replaced on register, deleted on 404/410."""

from dataclasses import dataclass
from uuid import UUID

from gchat.store.database import Executor


@dataclass(frozen=True)
class Subscription:
    device_id: UUID
    endpoint: str
    p256dh: bytes
    auth: bytes


async def register(
    db: Executor, device_id: UUID, endpoint: str, p256dh: bytes, auth: bytes
) -> None:
    await db.execute(
        """INSERT INTO push_subscriptions (device_id, endpoint, p256dh, auth)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (device_id) DO UPDATE
               SET endpoint = $2, p256dh = $3, auth = $4, created_at = now()""",
        device_id,
        endpoint,
        p256dh,
        auth,
    )


async def unregister(db: Executor, device_id: UUID) -> bool:
    status = await db.execute("DELETE FROM push_subscriptions WHERE device_id = $1", device_id)
    return bool(status.endswith(" 1"))


async def remove_if_same(db: Executor, device_id: UUID, endpoint: str) -> None:
    """Delete a subscription its push service called gone, unless since replaced."""
    await db.execute(
        "DELETE FROM push_subscriptions WHERE device_id = $1 AND endpoint = $2",
        device_id,
        endpoint,
    )


async def registered(db: Executor, device_id: UUID) -> bool:
    row = await db.fetchval("SELECT 1 FROM push_subscriptions WHERE device_id = $1", device_id)
    return row is not None


async def of_devices(db: Executor, device_ids: list[UUID]) -> list[Subscription]:
    """The subscriptions of those of ``device_ids`` that are active and have one."""
    rows = await db.fetch(
        """SELECT s.device_id, s.endpoint, s.p256dh, s.auth
           FROM push_subscriptions s JOIN devices d ON d.id = s.device_id
           WHERE s.device_id = ANY($1::uuid[]) AND d.status = 'active'""",
        device_ids,
    )
    return [Subscription(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in rows]
