-- G-Chat schema, version 16: a counter of changes to the agency tree and the
-- directory policies, so a send's write can tell they are unchanged without
-- walking them again.
--
-- A lone pairwise send is one statement that first reads again the standings
-- its check decided on (gchat/store/policies.py unchanged_cte). Walking each
-- official's agency chain and its policies for that (a recursive CTE, set
-- comparisons: some forty plan nodes to start and run) was about a quarter
-- of PostgreSQL's CPU per lone send (docs/PERFORMANCE.md, 2026-12-05). What
-- that walk yields (an official's root agency and message scope) changes
-- only when an agency is added, moved or removed, or a policy row changes:
-- rare administrative acts. Each such statement adds one to
-- ``policy_epoch.epoch`` in its own transaction, so a reader sees the new
-- tree and the new epoch together, or neither; a send's write compares the
-- epoch its standings were read at with the one in its own snapshot, and the
-- officials' status and agency and their active devices directly (frequent,
-- per-official changes: enrolments, revocations, suspensions, which should
-- not make every other official's kept standing stale).
--
-- Statement-level triggers: a bulk import bumps once per statement. The
-- bump's row lock makes such statements of concurrent transactions wait for
-- each other's commit (rare, short administrative transactions).
-- Forward-only.

CREATE TABLE policy_epoch (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch  bigint NOT NULL
);
INSERT INTO policy_epoch (epoch) VALUES (0);

CREATE FUNCTION policy_epoch_bump() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE policy_epoch SET epoch = epoch + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER agencies_policy_epoch
    AFTER INSERT OR DELETE OR UPDATE OF id, parent_id ON agencies
    FOR EACH STATEMENT EXECUTE FUNCTION policy_epoch_bump();
CREATE TRIGGER agencies_policy_epoch_truncate AFTER TRUNCATE ON agencies
    FOR EACH STATEMENT EXECUTE FUNCTION policy_epoch_bump();
CREATE TRIGGER directory_policies_policy_epoch
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON directory_policies
    FOR EACH STATEMENT EXECUTE FUNCTION policy_epoch_bump();

-- The application role (docs/AUDIT.md section 4) changes agencies and
-- policies, so it bumps the epoch (the trigger runs as the caller).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT SELECT, UPDATE ON policy_epoch TO gchat_app;
    END IF;
END
$$;
