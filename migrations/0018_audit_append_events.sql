-- G-Chat schema, version 18: the sequencer's append builds the packs in
-- PostgreSQL from the backlog's own rows, with a plan that needs no
-- statistics; the backlog is never truncated by VACUUM.
--
-- Before: the sequencer read every pending event's entry to the node,
-- packed them in Python (about 6-9 us of the node's event loop per event,
-- two events per message) and sent the packs back to
-- ``audit_append_packs()`` (0010), whose PL/pgSQL loop cut the packs apart
-- again, one event at a time, to delete exactly those events from the
-- backlog. Its DELETE joined the backlog with the packed events; planned
-- once per session (PL/pgSQL caches a generic plan) while the backlog was
-- nearly empty, it scanned the whole backlog for every packed event
-- (Rows Removed by Join Filter: 6,878,000 for 2,000 events, 3.4 s): once
-- the backlog grew the sequencer stalled, past the 30 s statement timeout,
-- and every new leader began the same walk (docs/PERFORMANCE.md).
--
-- Now: ``audit_append_events()`` takes the ids the sequencer chose (in
-- (xid, id) order) and the leaf hashes it hashed into the tree, deletes
-- those events by primary key, builds the packs from the deleted rows
-- (the same bytes the sequencer wrote: per event int8 id, int8
-- microseconds, uint16 length, stored entry; up to 16 per pack from
-- ``start_leaf``; a pack's ``at`` its newest event's time or the previous
-- pack's if later), writes them and the completed subtree roots, and
-- refuses, all or nothing, unless it moved exactly those events in that
-- order with exactly those leaf hashes. So the node's role still removes
-- an event from the backlog only by logging it, now without naming its
-- content at all. Its settings pin index scans (no plan depends on
-- statistics) and JIT off. ``audit_append_packs()`` stays for nodes older
-- than this migration during a rolling upgrade.
--
-- ``vacuum_truncate = false``: truncating the backlog's empty tail takes an
-- ACCESS EXCLUSIVE lock on ``audit_pending``, which every send's commit
-- inserts into; the sequencer's periodic VACUUM was seen waiting on it
-- (wait event VacuumTruncate) at capacity. The table's pages are reused.
-- Forward-only.

CREATE FUNCTION audit_append_events(start_leaf bigint, event_ids bigint[], leaf_hashes bytea,
                                    after_at timestamptz, subtree_heights smallint[],
                                    subtree_idxs bigint[], subtree_hashes bytea[])
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public SET enable_seqscan = off SET jit = off AS $$
DECLARE
    v_ids bigint[];
    v_hashes bytea;
    v_longest integer;
    v_newest timestamptz;
BEGIN
    IF coalesce(cardinality(event_ids), 0) = 0 THEN
        RETURN after_at;
    END IF;
    WITH moved AS (
        DELETE FROM audit_pending WHERE id = ANY(event_ids)
        RETURNING id, xid, created_at, leaf_hash, entry),
    ordered AS (
        SELECT row_number() OVER (ORDER BY xid, id) - 1 AS i, id, created_at, leaf_hash, entry
        FROM moved),
    grouped AS (
        SELECT i / 16 AS p, max(created_at) AS newest, min(created_at) AS min_at,
               min(id) AS min_id, max(id) AS max_id,
               string_agg(leaf_hash, ''::bytea ORDER BY i) AS hashes,
               string_agg(int8send(id)
                          || int8send((extract(epoch FROM created_at) * 1000000)::bigint)
                          || substring(int4send(length(entry)) FROM 3) || entry,
                          ''::bytea ORDER BY i) AS events,
               max(length(entry)) AS longest
        FROM ordered GROUP BY i / 16),
    packs AS (
        SELECT p, start_leaf + 16 * p AS first_leaf,
               greatest(after_at, max(newest) OVER (ORDER BY p)) AS at,
               min_at, min_id, max_id, hashes, events, longest
        FROM grouped),
    written AS (
        INSERT INTO audit_packs (first_leaf, at, min_at, min_id, max_id, hashes, events)
        SELECT first_leaf, at, min_at, min_id, max_id, hashes, events FROM packs
        WHERE longest <= 65535
        RETURNING at)
    SELECT (SELECT array_agg(id ORDER BY i) FROM ordered),
           (SELECT string_agg(hashes, ''::bytea ORDER BY p) FROM packs),
           (SELECT max(longest) FROM packs),
           (SELECT max(at) FROM written)
    INTO v_ids, v_hashes, v_longest, v_newest;
    IF v_ids IS DISTINCT FROM event_ids OR v_hashes IS DISTINCT FROM leaf_hashes THEN
        RAISE EXCEPTION 'audit append: the events are not pending as given (% of %)',
            coalesce(cardinality(v_ids), 0), cardinality(event_ids)
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF v_longest > 65535 THEN
        RAISE EXCEPTION 'audit append: a stored entry is longer than 65,535 bytes'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    INSERT INTO audit_subtrees (height, idx, hash)
        SELECT * FROM unnest(subtree_heights, subtree_idxs, subtree_hashes);
    RETURN v_newest;
END
$$;
REVOKE EXECUTE ON FUNCTION audit_append_events(bigint, bigint[], bytea, timestamptz, smallint[],
                                               bigint[], bytea[]) FROM PUBLIC;

ALTER TABLE audit_pending SET (vacuum_truncate = false);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT EXECUTE ON FUNCTION audit_append_events(bigint, bigint[], bytea, timestamptz,
                                                      smallint[], bigint[], bytea[])
            TO gchat_app;
    END IF;
END
$$;
