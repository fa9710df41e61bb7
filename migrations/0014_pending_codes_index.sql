-- G-Chat schema, version 14: the admins' list of pending enrolment codes
-- (list_pending_codes) walks the codes not yet used or cancelled by expiry,
-- so a page costs the same whether 30 or 300,000 letters are out. Used and
-- cancelled codes are not in it; expired ones are skipped by the range start.
-- Forward-only.

CREATE INDEX enrolment_codes_pending ON enrolment_codes (expires_at, id)
    WHERE used_at IS NULL AND cancelled_at IS NULL;
