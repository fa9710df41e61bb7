-- G-Chat schema, version 19: the sequencer's append deletes the events it
-- moves by their row addresses (ctid), a plan no statistics can change.
--
-- 0018 deleted them with ``id = ANY(ids)``. After the sequencer's VACUUM
-- runs on a drained backlog, ``audit_pending`` has pages but ``reltuples``
-- 0, the planner takes it for empty, and PL/pgSQL's cached plan walked the
-- whole (xid, id) index with the ids as a filter: about 1 s per 2,000
-- events at a backlog of 60,000 (``auto_explain``: Index Scan using
-- audit_pending_xid_id, Index Cond: id = ANY($2)), seen at 1-4.5 s per call
-- in a load test that let the backlog grow (docs/PERFORMANCE.md). By ctid
-- the only plan is a TID scan (sequential scans are off in the function).
-- The sequencer reads each event's ctid with its id; rows of the backlog
-- are never updated, so a live row keeps its ctid, and a row that is gone
-- (another sequencer moved it) fails the ids check: all or nothing, as
-- before. The 0018 signature is dropped (a node of that version retries
-- its term until it is upgraded; its events wait). Forward-only.

DROP FUNCTION audit_append_events(bigint, bigint[], bytea, timestamptz, smallint[], bigint[],
                                  bytea[]);

CREATE FUNCTION audit_append_events(start_leaf bigint, event_ids bigint[], event_rows tid[],
                                    leaf_hashes bytea, after_at timestamptz,
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
    IF coalesce(cardinality(event_ids), 0) = 0 THEN
        RETURN after_at;
    END IF;
    WITH moved AS (
        DELETE FROM audit_pending WHERE ctid = ANY(event_rows)
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
REVOKE EXECUTE ON FUNCTION audit_append_events(bigint, bigint[], tid[], bytea, timestamptz,
                                               smallint[], bigint[], bytea[]) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT EXECUTE ON FUNCTION audit_append_events(bigint, bigint[], tid[], bytea, timestamptz,
                                                      smallint[], bigint[], bytea[])
            TO gchat_app;
    END IF;
END
$$;
