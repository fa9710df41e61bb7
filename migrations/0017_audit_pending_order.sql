-- G-Chat schema, version 17: the audit backlog indexed in the order the
-- sequencer reads it, (xid, id).
--
-- A pass reads the backlog's first events past its horizon ordered by
-- (xid, id), at most 2,000 per transaction (gchat/store/audit.py
-- unsequenced). With an index on xid alone, PostgreSQL read every event
-- past the horizon to sort them, each transaction of a pass again: a pass
-- over a backlog of B events cost O(B^2 / 2,000). A new leader's first
-- pass starts from xid 0, so after a node restart with a large backlog
-- (or once the sequencer had fallen behind) each statement walked the
-- whole backlog (45 ms at 200,000 events, in three processes; past the
-- 30 s statement timeout with millions), and the sequencer could stop
-- (docs/PERFORMANCE.md, 2026-12-05). Ordered by this index, the
-- statement reads the 2,000 it returns (0.7 ms at 200,000).
--
-- The index on xid alone is dropped: (xid, id) serves every statement that
-- used it (the idle check's look-up by xid included). Forward-only.

CREATE INDEX audit_pending_xid_id ON audit_pending (xid, id);
DROP INDEX audit_pending_xid;
