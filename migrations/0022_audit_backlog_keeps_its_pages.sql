-- G-Chat schema, version 22: VACUUM leaves the audit backlog's empty pages in place.
-- The backlog is a queue: every send batch and ack batch inserts a row, and
-- the sequencer's pass moves every row out; its VACUUM (gchat.store.audit
-- vacuum_backlog, and autovacuum where it runs) then finds the table empty
-- and, by default, truncates it. Truncating takes an ACCESS EXCLUSIVE lock
-- on the table every send and ack statement inserts into (they wait behind
-- it), and the next inserts extend the table again page by page (the
-- relation's extension lock and a file extension each). Kept, the pages are
-- in the free space map and reused; the table stays at the size its
-- backlog reached (a few MB at capacity). Forward-only.

ALTER TABLE audit_backlog SET (vacuum_truncate = false, toast.vacuum_truncate = false);
