"""Enrolled devices: identity keys, certificates, status."""

from dataclasses import dataclass
from uuid import UUID

from gchat.store.database import Executor


@dataclass(frozen=True)
class DeviceStanding:
    """A device as authentication sees it: its keys, and whether it may act."""

    id: UUID
    official_id: UUID
    agency_id: UUID
    identity_key: bytes
    certificate: bytes
    device_active: bool
    official_active: bool

    @property
    def usable(self) -> bool:
        """May authenticate and send: device not revoked, official active."""
        return self.device_active and self.official_active


async def create(
    db: Executor,
    device_id: UUID,
    official_id: UUID,
    identity_key: bytes,
    certificate: bytes,
    name: str,
    platform: str,
) -> None:
    await db.execute(
        """INSERT INTO devices (id, official_id, identity_key, certificate, name, platform)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        device_id,
        official_id,
        identity_key,
        certificate,
        name,
        platform,
    )


async def get(db: Executor, device_id: UUID) -> DeviceStanding | None:
    row = await db.fetchrow(
        """SELECT d.id, d.official_id, o.agency_id, d.identity_key, d.certificate,
                  d.status = 'active' AS device_active, o.status = 'active' AS official_active
           FROM devices d JOIN officials o ON o.id = d.official_id WHERE d.id = $1""",
        device_id,
    )
    return DeviceStanding(**row) if row else None


async def count_active(db: Executor, official_id: UUID) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM devices WHERE official_id = $1 AND status = 'active'",
            official_id,
        )
    )


async def lock_official(db: Executor, official_id: UUID) -> None:
    """Serialise enrolments of one official so the device limit holds."""
    await db.execute("SELECT 1 FROM officials WHERE id = $1 FOR NO KEY UPDATE", official_id)


async def active_ids(db: Executor, official_ids: list[UUID]) -> dict[UUID, set[UUID]]:
    """Active device ids of each official (officials with none map to an empty set)."""
    rows = await db.fetch(
        """SELECT official_id, id FROM devices
           WHERE official_id = ANY($1::uuid[]) AND status = 'active'""",
        official_ids,
    )
    result: dict[UUID, set[UUID]] = {official: set() for official in official_ids}
    for row in rows:
        result[row["official_id"]].add(row["id"])
    return result


async def unusable(db: Executor, device_ids: list[UUID]) -> list[UUID]:
    """Those of ``device_ids`` that are revoked, unknown, or whose official is not active."""
    rows = await db.fetch(
        """SELECT d.id FROM devices d JOIN officials o ON o.id = d.official_id
           WHERE d.id = ANY($1::uuid[]) AND d.status = 'active' AND o.status = 'active'""",
        device_ids,
    )
    usable = {row["id"] for row in rows}
    return [device for device in device_ids if device not in usable]


async def touch(db: Executor, device_id: UUID) -> None:
    await db.execute("UPDATE devices SET last_seen_at = now() WHERE id = $1", device_id)
