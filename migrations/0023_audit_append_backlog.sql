-- G-Chat schema, version 23: the sequencer's append does less work per event.
--
-- Why (docs/PERFORMANCE.md, 2026-12-05 seqpg): the sequencer's PostgreSQL
-- backend spent about 6 us per event in steady passes of ~450 events, most
-- of it in ``audit_append_batches()`` (0021). Two parts of that were work
-- the stored bytes do not need:
--
-- * Packing. Each event's leaf hash was cut out of its row and every pack's
--   leaf hashes aggregated again (a second ordered aggregate per pack: a
--   sort per pack), and each event carried its row's leaf hashes and time
--   through the sort that groups events into packs. Now a pack's leaf
--   hashes are cut from ``event_hashes``, the pass's hashes the node sent,
--   which the function already refuses unless they equal the moved rows'
--   (``leaf_hashes`` in (xid, id) order, 32 bytes an event: 0021's check
--   constraint); a row's time is encoded once per row, not per event. The
--   packs are byte for byte those of ``audit_append_batches()``
--   (tests/audit/test_append_backlog.py compares them on one backlog).
-- * A futile compression. A pack of messages' events is ~2.6 KB: over the
--   2 KB TOAST target, so PostgreSQL compresses its largest value (the
--   events, LZ4: 0015) and, the row still too long, tried pglz on the next,
--   the pack's leaf hashes (up to 512 bytes of SHA-256 output, which never
--   compress), before moving the compressed events to the TOAST table.
--   ``hashes`` is now STORAGE PLAIN: never compressed nor moved out (it fits
--   any row), so that attempt is skipped; where every value lands is
--   unchanged. SET STORAGE recurses into the month partitions, and
--   partitions made later copy the parent's.
--
-- ``audit_append_batches()`` stays, unchanged, for nodes of the previous
-- version during a rolling upgrade: it still appends correctly (same
-- checks, same packs), and the sequencer's advisory lock lets one node at a
-- time append. Forward-only.

ALTER TABLE audit_packs ALTER COLUMN hashes SET STORAGE PLAIN;

-- The sequencer's append, as ``audit_append_batches()`` (0021): the backlog
-- rows at ``batch_rows`` (their first ids ``batch_ids``, in (xid, id)
-- order) out of the backlog, their events into packs of up to 16 from
-- ``start_leaf`` (a pack's ``at`` its newest event's time or the previous
-- pack's if later), and the completed subtree roots; all of it, or nothing
-- if those rows are not pending exactly so with exactly the leaf hashes
-- ``event_hashes``. Index plans only (no plan depends on statistics).
CREATE FUNCTION audit_append_backlog(start_leaf bigint, batch_ids bigint[], batch_rows tid[],
                                     event_hashes bytea, after_at timestamptz,
                                     subtree_heights smallint[], subtree_idxs bigint[],
                                     subtree_hashes bytea[])
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public SET enable_seqscan = off SET jit = off AS $$
DECLARE
    v_ids bigint[];
    v_hashes bytea;
    v_longest integer;
    v_newest timestamptz;
BEGIN
    IF coalesce(cardinality(batch_ids), 0) = 0 THEN
        RETURN after_at;
    END IF;
    WITH moved AS (
        DELETE FROM audit_backlog WHERE ctid = ANY(batch_rows)
        RETURNING id, xid, created_at, leaf_hashes, entries),
    placed AS (
        SELECT id, created_at, entries,
               int8send((extract(epoch FROM created_at) * 1000000)::bigint) AS micros,
               sum(cardinality(entries)) OVER (ORDER BY xid, id ROWS UNBOUNDED PRECEDING)
                 - cardinality(entries) AS base
        FROM moved),
    ordered AS (
        SELECT b.base + e.k - 1 AS i, b.id + e.k - 1 AS id, b.created_at,
               int8send(b.id + e.k - 1) || b.micros || substring(int4send(length(e.entry)) FROM 3)
                 || e.entry AS event, length(e.entry) AS len
        FROM placed b, unnest(b.entries) WITH ORDINALITY AS e(entry, k)),
    grouped AS (
        SELECT i / 16 AS p, max(created_at) AS newest, min(created_at) AS min_at,
               min(id) AS min_id, max(id) AS max_id,
               string_agg(event, ''::bytea ORDER BY i) AS events, max(len) AS longest
        FROM ordered GROUP BY i / 16),
    packs AS (
        SELECT p, start_leaf + 16 * p AS first_leaf,
               greatest(after_at, max(newest) OVER (ORDER BY p)) AS at,
               min_at, min_id, max_id, events, longest
        FROM grouped),
    written AS (
        INSERT INTO audit_packs (first_leaf, at, min_at, min_id, max_id, hashes, events)
        SELECT first_leaf, at, min_at, min_id, max_id,
               substring(event_hashes FROM 512 * p::integer + 1 FOR 512), events
        FROM packs WHERE longest <= 65535
        RETURNING at)
    SELECT (SELECT array_agg(id ORDER BY xid, id) FROM moved),
           (SELECT string_agg(leaf_hashes, ''::bytea ORDER BY xid, id) FROM moved),
           (SELECT max(longest) FROM packs),
           (SELECT max(at) FROM written)
    INTO v_ids, v_hashes, v_longest, v_newest;
    -- The packs' leaf hashes were cut from event_hashes: they are the moved
    -- rows' only if this holds, and otherwise nothing of this is kept.
    IF v_ids IS DISTINCT FROM batch_ids OR v_hashes IS DISTINCT FROM event_hashes THEN
        RAISE EXCEPTION 'audit append: the events are not pending as given (% of % rows)',
            coalesce(cardinality(v_ids), 0), cardinality(batch_ids)
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
REVOKE EXECUTE ON FUNCTION audit_append_backlog(bigint, bigint[], tid[], bytea, timestamptz,
                                                smallint[], bigint[], bytea[]) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT EXECUTE ON FUNCTION audit_append_backlog(bigint, bigint[], tid[], bytea,
                                                       timestamptz, smallint[], bigint[],
                                                       bytea[]) TO gchat_app;
    END IF;
END
$$;
