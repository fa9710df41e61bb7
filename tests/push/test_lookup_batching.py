"""The notifier's commit-path work stays small: lookups are gathered (a pure unit test)."""

import asyncio
from collections.abc import Iterable
from typing import Any
from uuid import UUID, uuid4

from gchat.push.notifier import LocalCoalescer, PushNotifier


class Pool:
    """Stands in for asyncpg's pool: records each subscription lookup, finds none."""

    def __init__(self) -> None:
        self.lookups: list[set[UUID]] = []

    async def fetch(self, _sql: str, device_ids: list[UUID]) -> list[Any]:
        self.lookups.append(set(device_ids))
        return []


class Db:
    def __init__(self) -> None:
        self.pool = Pool()


class Here:
    def __init__(self, connected: set[UUID]) -> None:
        self.here = connected

    def has_listeners(self, device_id: UUID) -> bool:
        return device_id in self.here

    async def connected(self, device_ids: Iterable[UUID]) -> set[UUID]:
        return {d for d in device_ids if d in self.here}


async def test_commits_within_the_interval_share_one_lookup_without_online_devices() -> None:
    online, a, b, c = uuid4(), uuid4(), uuid4(), uuid4()
    db = Db()
    notifier = PushNotifier(db, None, LocalCoalescer(30), Here({online}),  # type: ignore[arg-type]
                            lookup_interval=0.3)
    try:
        notifier.notify([a, online])
        await notifier.idle()
        assert db.pool.lookups == [{a}]
        for batch in ([b, online], [c], [b]):  # three commits within the interval
            notifier.notify(batch)
        await asyncio.sleep(0.05)
        assert db.pool.lookups == [{a}]  # not yet: the interval since the first has not passed
        await notifier.idle()
        assert db.pool.lookups == [{a}, {b, c}]
        notifier.notify([online])  # connected here: nothing to look up, ever
        await asyncio.sleep(0.4)
        assert db.pool.lookups == [{a}, {b, c}]
    finally:
        await notifier.close()
