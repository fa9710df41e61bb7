"""Signed and one-time prekeys; one-time keys are claimed at most once."""

from dataclasses import dataclass
from uuid import UUID

from gchat.store.database import Executor


@dataclass(frozen=True)
class PrekeyRow:
    key_id: int
    public_key: bytes


@dataclass(frozen=True)
class SignedPrekeyRow:
    key_id: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True)
class BundleRow:
    device_id: UUID
    certificate: bytes
    signed_prekey: SignedPrekeyRow
    one_time_prekey: PrekeyRow | None


async def set_signed(db: Executor, device_id: UUID, key: SignedPrekeyRow) -> None:
    await db.execute(
        """INSERT INTO signed_prekeys (device_id, key_id, public_key, signature)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (device_id) DO UPDATE SET key_id = EXCLUDED.key_id,
               public_key = EXCLUDED.public_key, signature = EXCLUDED.signature,
               created_at = now()""",
        device_id,
        key.key_id,
        key.public_key,
        key.signature,
    )


async def add_one_time(db: Executor, device_id: UUID, keys: list[PrekeyRow]) -> None:
    """Store one-time keys; re-uploading a key id replaces nothing."""
    await db.execute(
        """INSERT INTO one_time_prekeys (device_id, key_id, public_key)
           SELECT $1, k.key_id, k.public_key
           FROM unnest($2::bigint[], $3::bytea[]) AS k(key_id, public_key)
           ON CONFLICT DO NOTHING""",
        device_id,
        [k.key_id for k in keys],
        [k.public_key for k in keys],
    )


async def count_one_time(db: Executor, device_id: UUID) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM one_time_prekeys WHERE device_id = $1", device_id)
    )


async def claim_bundles(
    db: Executor, official_id: UUID, device_ids: list[UUID] | None = None
) -> list[BundleRow]:
    """One bundle per active device, each taking (deleting) one one-time key.

    ``FOR UPDATE SKIP LOCKED`` lets concurrent claimers take different keys
    instead of queueing on one; the DELETE ... RETURNING makes the
    hand-out and the removal one step, so no key is ever handed out twice.
    """
    rows = await db.fetch(
        """WITH active AS (
               SELECT d.id, d.certificate FROM devices d
               WHERE d.official_id = $1 AND d.status = 'active'
                 AND ($2::uuid[] IS NULL OR d.id = ANY($2::uuid[]))),
           picked AS (
               SELECT k.device_id, k.key_id FROM active a
               CROSS JOIN LATERAL (
                   SELECT device_id, key_id FROM one_time_prekeys
                   WHERE device_id = a.id ORDER BY key_id LIMIT 1
                   FOR UPDATE SKIP LOCKED) k),
           claimed AS (
               DELETE FROM one_time_prekeys k USING picked p
               WHERE k.device_id = p.device_id AND k.key_id = p.key_id
               RETURNING k.device_id, k.key_id, k.public_key)
           SELECT a.id AS device_id, a.certificate, s.key_id AS spk_id,
                  s.public_key AS spk_public, s.signature AS spk_signature,
                  c.key_id AS otk_id, c.public_key AS otk_public
           FROM active a
           JOIN signed_prekeys s ON s.device_id = a.id
           LEFT JOIN claimed c ON c.device_id = a.id
           ORDER BY a.id""",
        official_id,
        device_ids,
    )
    return [
        BundleRow(
            device_id=row["device_id"],
            certificate=row["certificate"],
            signed_prekey=SignedPrekeyRow(row["spk_id"], row["spk_public"], row["spk_signature"]),
            one_time_prekey=(
                PrekeyRow(row["otk_id"], row["otk_public"]) if row["otk_id"] is not None else None
            ),
        )
        for row in rows
    ]
