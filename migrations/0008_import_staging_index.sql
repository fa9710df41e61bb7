-- G-Chat schema, version 8: import staging that stays linear at 300,000 rows.
-- Staging a chunk looks up which of its employee ids earlier chunks of the
-- same import already hold; without this index every chunk scanned every
-- row staged so far (quadratic: 10k -> 100k rows made staging 104x slower).
-- touched_at is when a chunk was last staged: an import nobody has touched
-- for an hour is abandoned (its CLI died or lost its connection), and its
-- rows, personal data, are swept. Forward-only.

CREATE INDEX directory_import_rows_employee
    ON directory_import_rows (import_id, employee_id, line);

ALTER TABLE directory_imports ADD COLUMN touched_at timestamptz NOT NULL DEFAULT now();
