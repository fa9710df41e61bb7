-- G-Chat schema, version 12: autovacuum and statistics keep up with the churn tables.
-- inbox rows live from send to ack (seconds), messages until retention: both
-- see their whole content replaced many times a day. The defaults (vacuum
-- after 20% dead, analyze after 10% changed) let a table grow large before
-- statistics move, and a plan chosen on statistics taken while the table was
-- empty seq-scanned messages in a nested loop (1,400 -> 180 msg/s). These
-- thresholds make autovacuum, where it runs, visit them early and often.
-- Forward-only.

ALTER TABLE inbox SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02
);

ALTER TABLE messages SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
