-- G-Chat schema, version 21: the audit backlog holds one row per statement
-- that writes events (a send batch's "message.accepted" events, an ack
-- batch's "message.delivered" ones), not one row per event.
--
-- Why: every message writes two events, and each was a row of
-- ``audit_pending``: a heap tuple, an entry in ``audit_pending_xid_id``, two
-- WAL records (about 340 bytes), a sequence call, and later a delete (one
-- more WAL record) when the sequencer moved it. Measured on 32,768 events
-- written 32 a statement (docs/PERFORMANCE.md, 2026-12-05 auditbatch): the
-- inserts took 4.5 us and 337 WAL bytes per event, the deletes 0.54 us and
-- 54 bytes; as rows of 32 events, 0.8 us and 126 bytes, and 0.02 us and
-- 2 bytes.
--
-- ``audit_backlog``: up to 256 events of one statement, in order -- their
-- leaf hashes concatenated (``leaf_hashes``, 32 bytes each) and their stored
-- entries (``entries``) -- with their transaction (``xid``), time
-- (``created_at``) and the first one's id (``id``): the k-th (from 0) has
-- id ``id + k``. Ids stay unique without a call per event:
-- ``audit_events_id_seq`` now steps by 256, one value per row (a trigger
-- that took one value per event cost 0.8 us per event, as much as the
-- index entry it saved). They are no longer dense: a row of one event
-- uses 256 of them (2^53, the largest id a browser's number holds exactly,
-- is a century of rows at 10,000 a second). Events are sequenced in
-- (xid, id) order as before: a session's ids grow, so a transaction's rows
-- by (xid, id), each row's events in order, are its events by id. Values
-- stay uncompressed in the row up to 8 KB (about 50 events): compressing
-- them cost more than the bytes it saved, and the sequencer reads them once.
--
-- ``audit_append_batches()`` replaces ``audit_append_events()``: it takes
-- the rows' first ids and row addresses and the leaf hashes the sequencer
-- hashed into the tree, deletes those rows, packs their events (16 a pack,
-- as before) and refuses, all or nothing, unless it moved exactly those
-- rows in (xid, id) order with exactly those leaf hashes.
--
-- ``audit_pending`` becomes a view of the backlog's events, one row each
-- (id, xid, created_at, leaf_hash, entry), for operators' queries and for
-- nodes of the previous version during a rolling upgrade: their writes go
-- through it (an INSTEAD OF trigger makes each event a row of the
-- backlog, so they keep their order and their ids come from the sequence),
-- and their sequencer fails its term without writing anything (it reads the
-- rows' ctid, which a view has not, and ``audit_append_events()`` is gone),
-- so only a new node appends leaves. Nodes before 0018
-- (``audit_append_packs()``) likewise. The rows waiting are moved, each as a
-- row of one event with its id, transaction and time. Forward-only.

CREATE TABLE audit_backlog (
    id          bigint NOT NULL DEFAULT nextval('audit_events_id_seq'),
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL,
    leaf_hashes bytea NOT NULL,
    entries     bytea[] NOT NULL,
    CHECK (array_ndims(entries) = 1 AND cardinality(entries) BETWEEN 1 AND 256
           AND octet_length(leaf_hashes) = 32 * cardinality(entries))
);
ALTER TABLE audit_backlog ALTER COLUMN leaf_hashes SET STORAGE EXTERNAL,
                          ALTER COLUMN entries SET STORAGE EXTERNAL;
-- The backlog is small and short-lived: vacuum it often where autovacuum
-- runs, and never truncate it (0018: the truncation's lock stalls writers).
ALTER TABLE audit_backlog SET (toast_tuple_target = 8160, vacuum_truncate = false,
                               autovacuum_vacuum_scale_factor = 0,
                               autovacuum_vacuum_threshold = 1000);

INSERT INTO audit_backlog (id, xid, created_at, leaf_hashes, entries)
SELECT id, xid, created_at, leaf_hash, ARRAY[entry] FROM audit_pending;

CREATE INDEX audit_backlog_xid_id ON audit_backlog (xid, id);

-- Every id given so far is at most the sequence's last value, and every
-- row's first id from now on is 256 past the one before: a row's events
-- never take an id another event has.
ALTER SEQUENCE audit_events_id_seq INCREMENT BY 256;

DROP VIEW audit_events;
DROP FUNCTION audit_append_events(bigint, bigint[], tid[], bytea, timestamptz, smallint[],
                                  bigint[], bytea[]);
DROP FUNCTION audit_append_packs(bigint[], timestamptz[], timestamptz[], bigint[], bigint[],
                                 bytea[], bytea[]);
ALTER SEQUENCE audit_events_id_seq OWNED BY audit_backlog.id;
DROP TABLE audit_pending;

CREATE VIEW audit_pending AS
    SELECT b.id + e.k - 1 AS id, b.xid, b.created_at,
           substring(b.leaf_hashes FROM 32 * e.k::integer - 31 FOR 32) AS leaf_hash, e.entry
    FROM audit_backlog b, unnest(b.entries) WITH ORDINALITY AS e(entry, k);

-- A previous version's node writes events one row each through the view.
CREATE FUNCTION audit_pending_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_backlog (created_at, leaf_hashes, entries)
        VALUES (NEW.created_at, NEW.leaf_hash, ARRAY[NEW.entry]);
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_pending_insert INSTEAD OF INSERT ON audit_pending
    FOR EACH ROW EXECUTE FUNCTION audit_pending_insert();

-- As in 0010.
CREATE VIEW audit_events AS
    SELECT r.id, audit_entry_json(r.entry, r.created_at) AS entry, r.created_at,
           convert_from(audit_entry_json(r.entry, r.created_at), 'UTF8')::jsonb ->> 'kind' AS kind,
           audit_entry_ids(r.entry) AS officials, r.leaf_index
    FROM audit_packs p, LATERAL audit_pack_rows(p.first_leaf, p.events) AS r
    UNION ALL
    SELECT q.id, audit_entry_json(q.entry, q.created_at), q.created_at,
           convert_from(audit_entry_json(q.entry, q.created_at), 'UTF8')::jsonb ->> 'kind',
           audit_entry_ids(q.entry), NULL
    FROM audit_pending q;

-- The sequencer's append: the backlog rows at ``batch_rows`` (their first
-- ids ``batch_ids``, in (xid, id) order) out of the backlog, their events
-- into packs of up to 16 from ``start_leaf`` (a pack's ``at`` its newest
-- event's time or the previous pack's if later), and the completed subtree
-- roots; all of it, or nothing if those rows are not pending exactly so with
-- exactly the leaf hashes ``event_hashes``. Index plans only (no plan depends on statistics).
CREATE FUNCTION audit_append_batches(start_leaf bigint, batch_ids bigint[], batch_rows tid[],
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
        RETURNING id, xid, created_at, leaf_hashes AS hashes, entries),
    placed AS (
        SELECT id, xid, created_at, hashes, entries,
               sum(cardinality(entries)) OVER (ORDER BY xid, id ROWS UNBOUNDED PRECEDING)
                 - cardinality(entries) AS base
        FROM moved),
    ordered AS (
        SELECT b.base + e.k - 1 AS i, b.id + e.k - 1 AS id, b.created_at,
               substring(b.hashes FROM 32 * e.k::integer - 31 FOR 32) AS leaf_hash, e.entry
        FROM placed b, unnest(b.entries) WITH ORDINALITY AS e(entry, k)),
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
    SELECT (SELECT array_agg(id ORDER BY xid, id) FROM moved),
           (SELECT string_agg(hashes, ''::bytea ORDER BY p) FROM packs),
           (SELECT max(longest) FROM packs),
           (SELECT max(at) FROM written)
    INTO v_ids, v_hashes, v_longest, v_newest;
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
REVOKE EXECUTE ON FUNCTION audit_append_batches(bigint, bigint[], tid[], bytea, timestamptz,
                                                smallint[], bigint[], bytea[]) FROM PUBLIC;

-- The application role (docs/AUDIT.md section 4): reads the backlog, writes
-- only a row's time, leaf hashes and entries (its id and transaction come
-- from their defaults), the same through the view for nodes
-- of the previous version, and moves rows only through the append.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT SELECT ON audit_backlog, audit_pending, audit_events TO gchat_app;
        GRANT INSERT (created_at, leaf_hashes, entries) ON audit_backlog TO gchat_app;
        GRANT INSERT (created_at, leaf_hash, entry) ON audit_pending TO gchat_app;
        GRANT EXECUTE ON FUNCTION audit_append_batches(bigint, bigint[], tid[], bytea,
                                                       timestamptz, smallint[], bigint[],
                                                       bytea[]) TO gchat_app;
    END IF;
END
$$;
