-- Compact, time-partitioned audit storage (docs/AUDIT.md section 2).
--
-- Before: one audit_events row per event (canonical JSON, three uuid[]
-- columns, six indexes) and one audit_log row per leaf (two indexes):
-- about 1 KB per event, kept forever.  Now:
--
-- audit_pending: events committed but not yet in the Merkle log, written in
--   the transaction of the change they record (one multi-row INSERT per
--   batch).  ``entry`` is the stored form of the canonical JSON
--   (gchat/store/audit_codec.py), ``leaf_hash`` = SHA-256(0x00 || JSON),
--   computed by the writer.  The sequencer moves them into audit_packs
--   (audit_append_packs: out of the backlog only into the log), so the
--   table holds only the backlog.
-- audit_packs: the Merkle log, up to 16 consecutive leaves per row, written
--   once by the sequencer: their leaf hashes (``hashes``, 32 bytes each) and
--   their events (``events``: per event int8 id, int8 created_at in
--   microseconds since 1970, uint16 length, stored entry).  Partitioned by
--   month of ``at`` (the newest event's time; ``min_at`` the oldest's).
--   Indexes: first_leaf (unique per partition: leaves, proofs, export),
--   min_id (an auditor's id cursor), and a GIN index of the officials and
--   agencies the events involve (an auditor's look-ups).
-- audit_archived_leaves: leaf hashes of packs whose partition retention
--   dropped (``gchat audit archive``): proofs and old tree heads still verify.
-- The views audit_events and audit_log show the old shape (decoded in SQL)
-- for operators' ad-hoc queries; the node does not use them.

CREATE FUNCTION audit_entry_ids(e bytea) RETURNS uuid[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT ARRAY(
        SELECT encode(substring(e FROM h.o + 2 + 16 * i FOR 16), 'hex')::uuid
        FROM generate_series(0, h.m - 1) AS i)
    FROM (SELECT CASE WHEN get_byte(e, 0) < 255 THEN 3 ELSE 7 END AS o,
                 CASE WHEN get_byte(e, 0) < 255 THEN get_byte(e, 1)
                      ELSE get_byte(e, 3) * 256 + get_byte(e, 4) END AS m) AS h
$$;

-- The officials and agencies the events of a pack involve (what its GIN
-- index holds).  Self-contained: an index expression must not depend on
-- the search path (pg_restore runs with an empty one).
CREATE FUNCTION audit_pack_ids(events bytea) RETURNS uuid[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
DECLARE
    pos integer := 0;
    len integer;
    o integer;
    m integer;
    i integer;
    ids uuid[] := '{}';
BEGIN
    WHILE pos < length(events) LOOP
        len := get_byte(events, pos + 16) * 256 + get_byte(events, pos + 17);
        IF get_byte(events, pos + 18) < 255 THEN
            o := 3; m := get_byte(events, pos + 19);
        ELSE
            o := 7; m := get_byte(events, pos + 21) * 256 + get_byte(events, pos + 22);
        END IF;
        FOR i IN 0 .. m - 1 LOOP
            ids := ids || encode(substring(events FROM pos + 18 + o + 2 + 16 * i FOR 16),
                                 'hex')::uuid;
        END LOOP;
        pos := pos + 18 + len;
    END LOOP;
    RETURN ids;
END
$$;

CREATE FUNCTION audit_int8(b bytea, pos integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT ('x' || encode(substring(b FROM pos + 1 FOR 8), 'hex'))::bit(64)::bigint
$$;

CREATE FUNCTION audit_time(micros bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT '1970-01-01 00:00:00+00'::timestamptz + (micros || ' microseconds')::interval
$$;

CREATE FUNCTION audit_time_text(t timestamptz) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT convert_to(to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'UTF8')
$$;

CREATE FUNCTION audit_uuid_text(b bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT convert_to(encode(b, 'hex')::uuid::text, 'UTF8')
$$;

-- The canonical JSON of a stored entry (audit_codec.decode, in SQL).
CREATE FUNCTION audit_entry_json(e bytea, at timestamptz) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
DECLARE
    phrases text[] := ARRAY[',"actor_device":', ',"actor_official":', ',"agency":', ',"details":', ',"kind":', ',"subject_device":', ',"subject_official":', ',"time":', ',"v":', ',"message_id":', ',"sent_at":', ',"ciphertext_bytes":', ',"recipient_devices":', ',"conversation_id":', ',"message_kind":', ',"position":', ',"sender_official":', ',"sender_device":', ',"method":', ',"remote":', ',"device_name":', ',"platform":', ',"one_time_prekeys":', ',"bundle_devices":', ',"one_time_prekeys_claimed":', ',"returned":', ',"queried_officials":', ',"after_id":', ',"filter_official":', ',"filter_device":', ',"filter_agency":', ',"filter_kinds":', ',"filter_since":', ',"filter_until":', ',"leaf_index":', ',"tree_size":', ',"old_size":', ',"new_size":', ',"start":', ',"end":', ',"fresh":', ',"count":', ',"reasons":', ',"first_at":', ',"last_at":', ',"window_seconds":', ',"claimed_devices":', ',"members":', ',"member_devices":', ',"agency_code":', ',"role":', ',"via":', '{"actor_device":', '{"actor_official":', '{"agency":', '{"details":', '{"kind":', '{"subject_device":', '{"subject_official":', '{"time":', '{"v":', '{"message_id":', '{"sent_at":', '{"ciphertext_bytes":', '{"recipient_devices":', '{"conversation_id":', '{"message_kind":', '{"position":', '{"sender_official":', '{"sender_device":', '{"method":', '{"remote":', '{"device_name":', '{"platform":', '{"one_time_prekeys":', '{"bundle_devices":', '{"one_time_prekeys_claimed":', '{"returned":', '{"queried_officials":', '{"after_id":', '{"filter_official":', '{"filter_device":', '{"filter_agency":', '{"filter_kinds":', '{"filter_since":', '{"filter_until":', '{"leaf_index":', '{"tree_size":', '{"old_size":', '{"new_size":', '{"start":', '{"end":', '{"fresh":', '{"count":', '{"reasons":', '{"first_at":', '{"last_at":', '{"window_seconds":', '{"claimed_devices":', '{"members":', '{"member_devices":', '{"agency_code":', '{"role":', '{"via":', '"message.accepted"', '"message.delivered"', '"auth.succeeded"', '"auth.failed"', '"device.enrolled"', '"device.enrolment_refused"', '"keys.bundle_fetched"', '"audit.query"', '"audit.tree_head"', '"audit.inclusion_proof"', '"audit.consistency_proof"', '"audit.export"', '"admin.bootstrap"', '"admin.official_created"', '"admin.code_issued"', '"admin.device_revoked"', '"admin.official_suspended"', '"admin.official_reinstated"', '"admin.official_retired"', '"admin.official_updated"', '"admin.official_moved"', '"admin.officials_imported"', '"admin.role_granted"', '"admin.role_revoked"', '"admin.agency_created"', '"admin.agency_updated"', '"admin.agency_moved"', '"admin.policy_set"', '"admin.code_cancelled"', '"conversation.direct_created"', '"conversation.group_created"', '"conversation.members_added"', '"conversation.members_removed"', '"conversation.members_left"', '"conversation.renamed"', '"conversation.announcement_set"'];
    q bytea := '\x22';
    k integer;
    o integer;
    pos integer;
    j integer;
    b integer;
    n integer := length(e);
    ids bytea;
    out bytea := '';
BEGIN
    IF get_byte(e, 0) < 255 THEN
        k := get_byte(e, 0); o := 3;
    ELSE
        k := get_byte(e, 1) * 256 + get_byte(e, 2); o := 7;
    END IF;
    ids := substring(e FROM o + 2 FOR 16 * k);
    pos := o + 1 + 16 * k;
    WHILE pos < n LOOP
        b := get_byte(e, pos);
        IF b >= 32 THEN
            j := pos;
            WHILE j < n AND get_byte(e, j) >= 32 LOOP j := j + 1; END LOOP;
            out := out || substring(e FROM pos + 1 FOR j - pos);
            pos := j;
        ELSIF b = 1 THEN
            out := out || q || audit_uuid_text(substring(ids FROM 16 * get_byte(e, pos + 1) + 1 FOR 16)) || q;
            pos := pos + 2;
        ELSIF b = 2 THEN
            out := out || q || audit_uuid_text(substring(ids FROM
                       16 * (get_byte(e, pos + 1) * 256 + get_byte(e, pos + 2)) + 1 FOR 16)) || q;
            pos := pos + 3;
        ELSIF b = 3 THEN
            out := out || q || audit_uuid_text(substring(e FROM pos + 2 FOR 16)) || q;
            pos := pos + 17;
        ELSIF b = 4 THEN
            out := out || q || audit_time_text(at) || q;
            pos := pos + 1;
        ELSIF b = 5 THEN
            out := out || convert_to(phrases[get_byte(e, pos + 1) + 1], 'UTF8');
            pos := pos + 2;
        ELSIF b = 6 THEN
            out := out || q || audit_time_text(audit_time(audit_int8(e, pos + 1))) || q;
            pos := pos + 9;
        ELSIF b = 7 THEN
            out := out || audit_uuid_text(substring(e FROM pos + 2 FOR 16));
            pos := pos + 17;
        ELSIF b = 8 THEN
            out := out || audit_time_text(audit_time(audit_int8(e, pos + 1)));
            pos := pos + 9;
        ELSE
            RAISE EXCEPTION 'audit entry: unknown marker % at %', b, pos;
        END IF;
    END LOOP;
    RETURN out;
END
$$;

-- The events of a pack, one row each.
CREATE FUNCTION audit_pack_rows(first_leaf bigint, events bytea)
RETURNS TABLE (leaf_index bigint, id bigint, created_at timestamptz, entry bytea)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
DECLARE
    pos integer := 0;
    len integer;
    i integer := 0;
BEGIN
    WHILE pos < length(events) LOOP
        len := get_byte(events, pos + 16) * 256 + get_byte(events, pos + 17);
        leaf_index := first_leaf + i;
        id := audit_int8(events, pos);
        created_at := audit_time(audit_int8(events, pos + 8));
        entry := substring(events FROM pos + 19 FOR len);
        RETURN NEXT;
        pos := pos + 18 + len;
        i := i + 1;
    END LOOP;
END
$$;

CREATE TABLE audit_pending (
    id          bigint PRIMARY KEY,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL,
    leaf_hash   bytea NOT NULL CHECK (length(leaf_hash) = 32),
    entry       bytea NOT NULL
);
CREATE INDEX audit_pending_xid ON audit_pending (xid);
-- The backlog is small and short-lived: vacuum it often where autovacuum runs.
ALTER TABLE audit_pending SET (autovacuum_vacuum_scale_factor = 0,
                               autovacuum_vacuum_threshold = 10000);

CREATE TABLE audit_packs (
    first_leaf  bigint NOT NULL CHECK (first_leaf >= 0),
    at          timestamptz NOT NULL,
    min_at      timestamptz NOT NULL,
    min_id      bigint NOT NULL,
    max_id      bigint NOT NULL,
    hashes      bytea NOT NULL
                CHECK (length(hashes) BETWEEN 32 AND 512 AND length(hashes) % 32 = 0),
    events      bytea NOT NULL
) PARTITION BY RANGE (at);
CREATE INDEX audit_packs_min_id ON audit_packs (min_id);
CREATE INDEX audit_packs_parties ON audit_packs USING gin (audit_pack_ids(events));

CREATE TRIGGER audit_packs_append_only BEFORE UPDATE OR DELETE ON audit_packs
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_packs_no_truncate BEFORE TRUNCATE ON audit_packs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE audit_archived_leaves (
    first_leaf  bigint PRIMARY KEY CHECK (first_leaf >= 0),
    hashes      bytea NOT NULL CHECK (length(hashes) >= 32 AND length(hashes) % 32 = 0)
);
CREATE TRIGGER audit_archived_leaves_append_only BEFORE UPDATE OR DELETE ON audit_archived_leaves
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_archived_leaves_no_truncate BEFORE TRUNCATE ON audit_archived_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The month partition that holds packs whose newest event is at ``t``,
-- created if missing (the node creates the coming months ahead; the
-- sequencer calls it for any month a pass needs).  SECURITY DEFINER so a
-- least-privileged node role can add partitions, and nothing else.
CREATE FUNCTION audit_partition_for(t timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    month timestamp := date_trunc('month', t AT TIME ZONE 'UTC');
    name text := 'audit_packs_' || to_char(month, 'YYYYMM');
    parent regclass := 'audit_packs'::regclass;
    schema text := (SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = parent);
BEGIN
    IF to_regclass(format('%I.%I', schema, name)) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('audit_packs partitions'));
    IF to_regclass(format('%I.%I', schema, name)) IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       schema, name, parent, month AT TIME ZONE 'UTC',
                       (month + interval '1 month') AT TIME ZONE 'UTC');
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I.%I (first_leaf)',
                       name || '_first_leaf', schema, name);
        EXECUTE format('CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON %I.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()', schema, name);
    END IF;
    RETURN name;
END
$$;

-- The sequencer's append: packs into the log, and their events out of the
-- backlog -- only events whose entry and leaf hash the packs hold exactly,
-- all of them or nothing.  SECURITY DEFINER: the node's role may not
-- delete from audit_pending itself, so an event leaves the backlog only by
-- entering the log.
CREATE FUNCTION audit_append_packs(first_leafs bigint[], ats timestamptz[], min_ats timestamptz[],
                                   min_ids bigint[], max_ids bigint[], hashes bytea[],
                                   events bytea[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    ids bigint[] := '{}';
    entries bytea[] := '{}';
    leaf_hashes bytea[] := '{}';
    p integer;
    pos integer;
    i integer;
    len integer;
    moved bigint;
BEGIN
    INSERT INTO audit_packs (first_leaf, at, min_at, min_id, max_id, hashes, events)
        SELECT * FROM unnest(first_leafs, ats, min_ats, min_ids, max_ids, hashes, events);
    FOR p IN 1 .. cardinality(events) LOOP
        pos := 0;
        i := 0;
        WHILE pos < length(events[p]) LOOP
            len := get_byte(events[p], pos + 16) * 256 + get_byte(events[p], pos + 17);
            ids := ids || audit_int8(events[p], pos);
            entries := entries || substring(events[p] FROM pos + 19 FOR len);
            leaf_hashes := leaf_hashes || substring(hashes[p] FROM 32 * i + 1 FOR 32);
            pos := pos + 18 + len;
            i := i + 1;
        END LOOP;
    END LOOP;
    DELETE FROM audit_pending q
        USING unnest(ids, entries, leaf_hashes) AS m(id, entry, leaf_hash)
        WHERE q.id = m.id AND q.entry = m.entry AND q.leaf_hash = m.leaf_hash;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> cardinality(ids) THEN
        RAISE EXCEPTION 'audit append: % of % events are not pending as packed', cardinality(ids) - moved,
            cardinality(ids) USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN moved;
END
$$;
REVOKE EXECUTE ON FUNCTION audit_append_packs(bigint[], timestamptz[], timestamptz[], bigint[],
                                              bigint[], bytea[], bytea[]) FROM PUBLIC;

-- Number of leaves in the log.
CREATE FUNCTION audit_log_size() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT greatest(
        coalesce((SELECT first_leaf + length(hashes) / 32 FROM audit_packs
                  ORDER BY first_leaf DESC LIMIT 1), 0),
        coalesce((SELECT first_leaf + length(hashes) / 32 FROM audit_archived_leaves
                  ORDER BY first_leaf DESC LIMIT 1), 0))
$$;

-- The old tables' rows, moved: sequenced events into packs of up to 16
-- leaves (aligned), the others into audit_pending.  Their entries are
-- stored as header, kind, ids and the JSON itself (no substitutions: a
-- valid stored form).
CREATE FUNCTION audit_stored_form(kind text, officials uuid[], agencies uuid[], devices uuid[],
                                  entry bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN k < 255
                THEN decode(lpad(to_hex(k), 2, '0') || lpad(to_hex(m), 2, '0')
                            || lpad(to_hex(n), 2, '0'), 'hex')
                ELSE '\xff'::bytea || decode(lpad(to_hex(k), 4, '0') || lpad(to_hex(m), 4, '0')
                                             || lpad(to_hex(n), 4, '0'), 'hex') END
           || decode(lpad(to_hex(coalesce(array_position(ARRAY['message.accepted', 'message.delivered', 'auth.succeeded', 'auth.failed', 'device.enrolled', 'device.enrolment_refused', 'keys.bundle_fetched', 'audit.query', 'audit.tree_head', 'audit.inclusion_proof', 'audit.consistency_proof', 'audit.export', 'admin.bootstrap', 'admin.official_created', 'admin.code_issued', 'admin.device_revoked', 'admin.official_suspended', 'admin.official_reinstated', 'admin.official_retired', 'admin.official_updated', 'admin.official_moved', 'admin.officials_imported', 'admin.role_granted', 'admin.role_revoked', 'admin.agency_created', 'admin.agency_updated', 'admin.agency_moved', 'admin.policy_set', 'admin.code_cancelled', 'conversation.direct_created', 'conversation.group_created', 'conversation.members_added', 'conversation.members_removed', 'conversation.members_left', 'conversation.renamed', 'conversation.announcement_set'], kind) - 1, 255)), 2, '0'), 'hex')
           || coalesce((SELECT string_agg(uuid_send(u), ''::bytea ORDER BY o)
                        FROM unnest(officials || agencies || devices) WITH ORDINALITY AS x(u, o)),
                       ''::bytea)
           || entry
    FROM (SELECT cardinality(officials) + cardinality(agencies) + cardinality(devices) AS k,
                 cardinality(officials) + cardinality(agencies) AS m,
                 cardinality(officials) AS n) AS c
$$;

SELECT audit_partition_for(t)
FROM (SELECT DISTINCT date_trunc('month', max(e.created_at)) AS t
      FROM audit_log l JOIN audit_events e ON e.id = l.event_id
      GROUP BY l.leaf_index / 16) AS months;

INSERT INTO audit_packs (first_leaf, at, min_at, min_id, max_id, hashes, events)
SELECT min(l.leaf_index), max(e.created_at), min(e.created_at), min(e.id), max(e.id),
       string_agg(l.leaf_hash, ''::bytea ORDER BY l.leaf_index),
       string_agg(int8send(e.id)
                  || int8send((extract(epoch FROM e.created_at) * 1000000)::bigint)
                  || decode(lpad(to_hex(length(s.stored)), 4, '0'), 'hex') || s.stored,
                  ''::bytea ORDER BY l.leaf_index)
FROM audit_log l JOIN audit_events e ON e.id = l.event_id,
     LATERAL (SELECT audit_stored_form(e.kind, e.officials, e.agencies, e.devices, e.entry)
              AS stored) AS s
GROUP BY l.leaf_index / 16;

INSERT INTO audit_pending (id, xid, created_at, leaf_hash, entry)
SELECT e.id, e.xid, e.created_at, sha256('\x00'::bytea || e.entry),
       audit_stored_form(e.kind, e.officials, e.agencies, e.devices, e.entry)
FROM audit_events e WHERE NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.event_id = e.id);

DROP FUNCTION audit_stored_form(text, uuid[], uuid[], uuid[], bytea);
ALTER SEQUENCE audit_events_id_seq OWNED BY NONE;
DROP TABLE audit_log;
DROP TABLE audit_events;
ALTER TABLE audit_pending ALTER COLUMN id SET DEFAULT nextval('audit_events_id_seq');
ALTER SEQUENCE audit_events_id_seq OWNED BY audit_pending.id;

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

CREATE VIEW audit_log AS
    SELECT p.first_leaf + i AS leaf_index, r.id AS event_id,
           substring(p.hashes FROM 32 * i + 1 FOR 32) AS leaf_hash
    FROM audit_packs p, LATERAL audit_pack_rows(p.first_leaf, p.events) AS r,
         LATERAL (SELECT (r.leaf_index - p.first_leaf)::integer AS i) AS x
    UNION ALL
    SELECT a.first_leaf + i, NULL, substring(a.hashes FROM 32 * i + 1 FOR 32)
    FROM audit_archived_leaves a, generate_series(0, length(a.hashes) / 32 - 1) AS i;

-- The application role (docs/AUDIT.md section 4): appends events, moves
-- them into the log (the sequencer, through audit_append_packs), reads;
-- never updates or deletes.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT SELECT, INSERT ON audit_pending TO gchat_app;
        GRANT EXECUTE ON FUNCTION audit_append_packs(bigint[], timestamptz[], timestamptz[],
                                                     bigint[], bigint[], bytea[], bytea[])
            TO gchat_app;
        GRANT SELECT, INSERT ON audit_packs TO gchat_app;
        GRANT SELECT ON audit_archived_leaves, audit_events, audit_log TO gchat_app;
        GRANT USAGE ON SEQUENCE audit_events_id_seq TO gchat_app;
    END IF;
END
$$;

ANALYZE audit_pending;
ANALYZE audit_packs;
