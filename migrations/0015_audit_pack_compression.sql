-- G-Chat schema, version 15: packs' events compressed with LZ4.
--
-- A pack (16 events, about 2.9 KB stored) is over the 2 KB TOAST
-- threshold, so PostgreSQL tries to compress its ``events``.  With pglz
-- (the default) that only counts when it saves 25%, which packs of
-- unrelated events (random ids, short bodies) never reach: they went to the
-- TOAST table uncompressed, in two chunks each.  LZ4 keeps any saving: the
-- repeated shape of a pack's events (the same key phrases and id references
-- in each) is about a fifth of it (bytes per event: docs/PERFORMANCE.md,
-- issue 20).  Only new packs are compressed (the log is append-only: old
-- rows are never rewritten); every query reads a pack as before.
--
-- ALTER ... SET COMPRESSION on a partitioned table does not recurse, so each
-- partition that exists is altered too; partitions made later
-- (audit_partition_for) copy the parent's setting.  A PostgreSQL built
-- without LZ4 keeps pglz (a notice says so).  Forward-only.

DO $$
DECLARE
    part regclass;
BEGIN
    ALTER TABLE audit_packs ALTER COLUMN events SET COMPRESSION lz4;
    FOR part IN SELECT relid FROM pg_partition_tree('audit_packs') WHERE relid <> 'audit_packs'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN events SET COMPRESSION lz4', part);
    END LOOP;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'audit_packs.events: this PostgreSQL has no LZ4, packs stay as they are (pglz)';
END
$$;
