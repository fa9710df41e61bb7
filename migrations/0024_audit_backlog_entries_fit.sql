-- G-Chat schema, version 24: the audit backlog takes no entry its packs cannot hold.
--
-- Why: a pack stores each event's entry after a two-byte length (the append,
-- ``audit_append_backlog`` of 0023 as 0021's before it), so an entry of more
-- than 65,535 bytes can never be appended: the append refuses the whole pass
-- (``program_limit_exceeded``) and the sequencer, which must append the
-- backlog in order, retries the same pass for ever. The backlog accepted such a row, so the application role
-- (a bug in the node, or whoever holds its database password) could stop
-- the audit log with one INSERT: every later event, of every node, waited
-- behind it. Now the row is refused at its INSERT, by the statement that
-- writes it (which fails, and with it whatever it was recording), and the
-- log keeps moving. No event G-Chat writes reaches the limit: the largest,
-- a membership change of a 1,000-member group, stores 19,921 bytes, or
-- 35,921 if every member is of another agency (each agency's id is in it).
--
-- A CHECK, not a trigger, and PL/pgSQL, not SQL: an SQL function that
-- unnests the array is planned again for every row (about 50 us a row
-- here), a FOREACH loop costs nothing measurable against the insert
-- (docs/PERFORMANCE.md). ``pg_catalog.`` names the one function it calls,
-- whatever the caller's search_path. Forward-only.

CREATE FUNCTION audit_entries_fit(entries bytea[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    entry bytea;
BEGIN
    FOREACH entry IN ARRAY entries LOOP
        IF pg_catalog.octet_length(entry) > 65535 THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

ALTER TABLE audit_backlog
    ADD CONSTRAINT audit_backlog_entries_fit CHECK (audit_entries_fit(entries));
