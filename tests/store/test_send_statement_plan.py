"""The pairwise send statement's plan on a pinned connection: what it inserted is
picked from the batch by one hash table, not by comparing every row with every other."""

import asyncpg

from gchat.store import messages
from gchat.store.database import PINNED_SETTINGS


async def test_envelopes_and_events_of_the_inserted_messages_are_picked_by_hashing(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url, server_settings=PINNED_SETTINGS)
    try:
        # The generic plan (``force_generic_plan``): the one a pinned
        # connection caches and runs for every batch, whatever its size.
        plan = "\n".join(
            row[0]
            for row in await conn.fetch(
                "EXPLAIN " + messages._STORE_AND_ENQUEUE,
                *([[]] * 12),
                None,
                None,
                *([[]] * 9),
            )
        )
    finally:
        await conn.close()
    # The envelopes (for the inbox) and the "message.accepted" events each
    # probe a hash of the inserted ids ...
    assert plan.count("hashed SubPlan") == 2, plan
    # ... and no join compares the batch's rows with the inserted messages
    # (``ins``) one by one: with hash joins off, such a join is a nested
    # loop, B x B comparisons for a batch of B sends.
    filters = [line.strip() for line in plan.splitlines() if "Join Filter" in line]
    assert not [f for f in filters if "ins" in f], plan
