"""``python -m loadtests.ack_delete``: PostgreSQL time of an ack batch's delete, by formulation.

An ack batch deletes the acked inbox rows and returns, for each, what its
"message.delivered" audit event needs, including the agencies of the
acking device's official and of the sender. Until issue 19's drain work
these were two scalar subqueries per deleted row (``PER_ROW``); now they
are looked up once per distinct device and sender (``DISTINCT``, as
``gchat.store.messages.delete_acked_many`` did until 2026-12-05). This queues
20,000 envelopes
for 10 devices (as the backlog scenario does), then runs each formulation
on 500-row batches (50 per device) under ``EXPLAIN ANALYZE`` in a
rolled-back transaction, alternating, 8 times each, and prints the
medians. EXPLAIN's instrumentation adds to every plan node's time: the
ratio is the figure, not the milliseconds.
"""

import asyncio
import json
import statistics

import asyncpg

from loadtests.scenarios import Run, insert_backlog

PER_ROW = """DELETE FROM inbox i
                USING unnest($1::uuid[], $2::bigint[]) AS a(device_id, position), messages m
                WHERE i.device_id = a.device_id AND i.position = a.position
                  AND m.id = i.message_id
                RETURNING i.device_id, i.message_id, i.position, i.ciphertext IS NULL AS shared,
                          m.sender_official, m.sender_device,
                          (SELECT o.agency_id FROM devices d JOIN officials o
                             ON o.id = d.official_id WHERE d.id = i.device_id) AS device_agency,
                          (SELECT o.agency_id FROM officials o
                             WHERE o.id = m.sender_official) AS sender_agency"""
# As ``delete_acked_many`` looked them up until the delete wrote the audit events
# itself (docs/PERFORMANCE.md, "acks": ``loadtests.ack_cost`` measures that path).
DISTINCT = """WITH d AS (
              DELETE FROM inbox i
              USING unnest($1::uuid[], $2::bigint[]) AS a(device_id, position), messages m
              WHERE i.device_id = a.device_id AND i.position = a.position
                AND m.id = i.message_id
              RETURNING i.device_id, i.message_id, i.position,
                        i.ciphertext IS NULL AS shared, m.sender_official, m.sender_device),
            device_agencies AS MATERIALIZED (
              SELECT array_agg(v.id) AS ids,
                     array_agg((SELECT o.agency_id FROM devices x JOIN officials o
                                  ON o.id = x.official_id WHERE x.id = v.id)) AS agencies
              FROM (SELECT DISTINCT device_id AS id FROM d) v),
            sender_agencies AS MATERIALIZED (
              SELECT array_agg(s.id) AS ids,
                     array_agg((SELECT o.agency_id FROM officials o WHERE o.id = s.id))
                       AS agencies
              FROM (SELECT DISTINCT sender_official AS id FROM d) s)
            SELECT d.*, da.agencies[array_position(da.ids, d.device_id)] AS device_agency,
                   sa.agencies[array_position(sa.ids, d.sender_official)] AS sender_agency
            FROM d, device_agencies da, sender_agencies sa"""
NO_AGENCIES = PER_ROW.split(",\n                          (SELECT")[0]


async def main() -> None:
    run = Run(short=True)
    try:
        await run.setup(11, raw_relay=False)
        assert run.node is not None and run.database_url is not None
        recipients = run.devs[-10:]
        await insert_backlog(run.database_url, run.devs[-11], [(d, 2000) for d in recipients])
        run.node.stop()  # nothing else deletes meanwhile
        conn = await asyncpg.connect(run.database_url)
        try:
            first = {r["device_id"]: r["first"] for r in await conn.fetch(
                "SELECT device_id, min(position) AS first FROM inbox GROUP BY 1")}
            devices = [d.device_id for d in recipients]
            statements = {"per-row subqueries (before)": PER_ROW,
                          "once per device and sender (now)": DISTINCT,
                          "no agencies at all (floor)": NO_AGENCIES}
            times: dict[str, list[float]] = {name: [] for name in statements}
            for rep in range(8):
                for name in list(statements) if rep % 2 == 0 else list(statements)[::-1]:
                    positions = [first[d] + p for d in devices for p in range(50)]
                    transaction = conn.transaction()
                    await transaction.start()
                    try:
                        plan = await conn.fetchval(
                            "EXPLAIN (ANALYZE, FORMAT JSON) " + statements[name],
                            [d for d in devices for _ in range(50)], positions)
                    finally:
                        await transaction.rollback()  # the same rows for every formulation
                    times[name].append(json.loads(plan)[0]["Execution Time"])
        finally:
            await conn.close()
        for name, got in times.items():
            print(f"{name}: median {statistics.median(got):.2f} ms per 500-row ack batch "
                  f"(min {min(got):.2f}, max {max(got):.2f})")
    finally:
        await run.teardown()


if __name__ == "__main__":  # the load generator's spawned workers import this module
    asyncio.run(main())
