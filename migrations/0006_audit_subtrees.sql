-- Merkle proofs from storage, not from each node's memory (docs/AUDIT.md section 2).
--
-- audit_subtrees: the root of every complete aligned subtree whose height
--   is a multiple of 8 (covering leaves [idx * 2^height, (idx + 1) * 2^height)):
--   one row per 256 leaves, one per 65,536, ... -- the bottom rows of the
--   256-wide "tiles" of a transparency log. With the leaf hashes in
--   audit_log, any subtree root is at most 128 stored hashes folded, so a
--   proof of any tree size, or a new sequencer's state, costs O(log n)
--   rows read instead of the whole log. Written once by the sequencer in
--   the transaction that appends the leaves completing the subtree;
--   append-only like the other audit tables.

CREATE TABLE audit_subtrees (
    height  smallint NOT NULL CHECK (height > 0 AND height % 8 = 0),
    idx     bigint NOT NULL CHECK (idx >= 0),
    hash    bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (height, idx)
);

CREATE TRIGGER audit_subtrees_append_only BEFORE UPDATE OR DELETE ON audit_subtrees
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_subtrees_no_truncate BEFORE TRUNCATE ON audit_subtrees
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Stores the subtree roots of the leaves already in audit_log that are not
-- stored yet (RFC 9162 node hash: SHA-256(0x01 || left || right)). Run
-- below for a log sequenced before this migration; about one hash per leaf,
-- level by level in set-based SQL. Safe to run again (it adds only what
-- is missing).
CREATE FUNCTION audit_backfill_subtrees() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    h integer := 0;
    added bigint := 0;
    n bigint;
BEGIN
    CREATE TEMP TABLE audit_level ON COMMIT DROP AS
        SELECT leaf_index AS idx, leaf_hash AS hash FROM audit_log;
    LOOP
        CREATE TEMP TABLE audit_next ON COMMIT DROP AS
            SELECT a.idx / 2 AS idx, sha256('\x01'::bytea || a.hash || b.hash) AS hash
            FROM audit_level a JOIN audit_level b ON b.idx = a.idx + 1
            WHERE a.idx % 2 = 0;
        h := h + 1;
        DROP TABLE audit_level;
        ALTER TABLE audit_next RENAME TO audit_level;
        EXIT WHEN NOT EXISTS (SELECT 1 FROM audit_level);
        IF h % 8 = 0 THEN
            INSERT INTO audit_subtrees (height, idx, hash)
                SELECT h, idx, hash FROM audit_level ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS n = ROW_COUNT;
            added := added + n;
        END IF;
    END LOOP;
    DROP TABLE audit_level;
    RETURN added;
END
$$;

SELECT audit_backfill_subtrees();

-- The application role (docs/AUDIT.md section 4) reads and appends, nothing else.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT SELECT, INSERT ON audit_subtrees TO gchat_app;
    END IF;
END
$$;
