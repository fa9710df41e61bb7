-- Tamper-evident audit log (docs/AUDIT.md).
--
-- audit_events: one row per event, written in the transaction of the change
--   it records. ``entry`` is the canonical JSON of the event: the Merkle leaf
--   data. The other columns are indexes for auditors' queries; ``xid`` lets
--   the sequencer find events committed since its last pass.
-- audit_log: the Merkle tree's leaves, appended by the one sequencer (holder
--   of an advisory lock): contiguous leaf indexes in the order the sequencer
--   saw the events commit.
-- audit_tree_heads: tree heads (size, root, timestamp) signed with the audit
--   key (Ed25519).
-- All three are append-only: triggers refuse UPDATE, DELETE and TRUNCATE,
-- and the application needs only SELECT and INSERT on them (docs/AUDIT.md).
-- Nothing here is message content or key material.

CREATE TABLE audit_events (
    id                bigserial PRIMARY KEY,
    xid               xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind              text NOT NULL,
    created_at        timestamptz NOT NULL,
    actor_official    uuid,
    actor_device      uuid,
    subject_official  uuid,
    subject_device    uuid,
    officials         uuid[] NOT NULL DEFAULT '{}',
    devices           uuid[] NOT NULL DEFAULT '{}',
    agencies          uuid[] NOT NULL DEFAULT '{}',
    entry             bytea NOT NULL
);
CREATE INDEX audit_events_xid ON audit_events (xid);
CREATE INDEX audit_events_created_at ON audit_events (created_at);
CREATE INDEX audit_events_kind ON audit_events (kind, id);
CREATE INDEX audit_events_officials ON audit_events USING gin (officials);
CREATE INDEX audit_events_devices ON audit_events USING gin (devices);
CREATE INDEX audit_events_agencies ON audit_events USING gin (agencies);

CREATE TABLE audit_log (
    leaf_index  bigint PRIMARY KEY CHECK (leaf_index >= 0),
    event_id    bigint NOT NULL UNIQUE REFERENCES audit_events (id),
    leaf_hash   bytea NOT NULL CHECK (length(leaf_hash) = 32),
    -- every event whose xid is below this was sequenced before this leaf's
    -- pass began: where a new sequencer resumes its search (docs/AUDIT.md)
    low_xid     xid8 NOT NULL,
    sequenced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_tree_heads (
    tree_size     bigint NOT NULL CHECK (tree_size >= 0),
    timestamp_ms  bigint NOT NULL,
    root_hash     bytea NOT NULL CHECK (length(root_hash) = 32),
    signature     bytea NOT NULL CHECK (length(signature) = 64),
    key_id        bytea NOT NULL,
    PRIMARY KEY (tree_size, timestamp_ms)
);
CREATE INDEX audit_tree_heads_latest ON audit_tree_heads (timestamp_ms DESC);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_tree_heads_append_only BEFORE UPDATE OR DELETE ON audit_tree_heads
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_tree_heads_no_truncate BEFORE TRUNCATE ON audit_tree_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
