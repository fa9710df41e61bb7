-- G-Chat schema, version 20: the audit backlog without its primary key.
--
-- Since 0019 nothing reads ``audit_pending`` by its primary key: the
-- sequencer finds events through ``audit_pending_xid_id`` and deletes them
-- by row address (ctid); an auditor's look at the backlog reads the few
-- rows waiting. Yet every event (two per message) paid an index insert for
-- it: one of the three WAL records of an event's insert, 65 of its 430 WAL
-- bytes, about 0.5 us of PostgreSQL CPU, and the index's pages, which are
-- not recycled while a long transaction runs anywhere on the cluster
-- (docs/PERFORMANCE.md). Event ids stay unique: they come from
-- ``audit_events_id_seq`` (the column's default), and the application role,
-- where there is one, may now insert only the columns it writes, so it can
-- choose neither an event's id nor its transaction id. Forward-only.

ALTER TABLE audit_pending DROP CONSTRAINT audit_pending_pkey;
ALTER TABLE audit_pending ALTER COLUMN id SET NOT NULL;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        REVOKE INSERT ON audit_pending FROM gchat_app;
        GRANT INSERT (created_at, leaf_hash, entry) ON audit_pending TO gchat_app;
    END IF;
END
$$;
