-- G-Chat schema, version 2: the agency directory and its administration.
-- Agencies and officials get Thai and English names (``name`` stays, as the
-- display name: the Thai name when there is one, else the English one),
-- officials get position, contact and an HR employee id; search terms,
-- messaging/device/retention policy, cancellable enrolment codes, and a
-- staging area for bulk imports. Forward-only.

-- --- agencies: Thai and English names --------------------------------------

ALTER TABLE agencies ADD COLUMN name_th text, ADD COLUMN name_en text;
UPDATE agencies SET name_th = name WHERE name ~ '[ก-๛]';
UPDATE agencies SET name_en = name WHERE name_th IS NULL;
ALTER TABLE agencies DROP COLUMN name;
ALTER TABLE agencies
    ADD COLUMN name text GENERATED ALWAYS AS (coalesce(name_th, name_en)) STORED,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT agencies_named CHECK (name_th IS NOT NULL OR name_en IS NOT NULL),
    ADD CONSTRAINT agencies_not_own_parent CHECK (parent_id IS DISTINCT FROM id);
CREATE INDEX agencies_parent ON agencies (parent_id);

-- --- officials: names, position, contact, HR id ----------------------------

ALTER TABLE officials ADD COLUMN name_th text, ADD COLUMN name_en text;
UPDATE officials SET name_th = name WHERE name ~ '[ก-๛]';
UPDATE officials SET name_en = name WHERE name_th IS NULL;
ALTER TABLE officials DROP COLUMN name;
ALTER TABLE officials
    ADD COLUMN name text GENERATED ALWAYS AS (coalesce(name_th, name_en)) STORED,
    ADD COLUMN position     text,
    ADD COLUMN email        text,
    ADD COLUMN phone        text,
    -- The HR system's id: what an import matches on, unique when present.
    ADD COLUMN employee_id  text UNIQUE,
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN status_changed_at timestamptz,
    ADD CONSTRAINT officials_named CHECK (name_th IS NOT NULL OR name_en IS NOT NULL);
CREATE INDEX officials_name ON officials (name, id);

-- --- search terms ------------------------------------------------------------
-- One row per word (and per whole name) of an official's names and position,
-- and of an agency's code and names, normalised by the application (NFKC,
-- case-folded; Thai has no case). COLLATE "C" orders by code point whatever
-- the database's locale, so a prefix is one index range scan:
-- term >= 'prefix' AND term < next(prefix). Derived data, rewritten with the
-- row it indexes (officials and agencies are never deleted), so no foreign
-- key: checking one per term made a 10,000-official import 4x slower.

CREATE TABLE official_terms (
    term         text COLLATE "C" NOT NULL,
    official_id  uuid NOT NULL,
    -- Copies of what search filters and sorts by, kept in step by the store
    -- (moves, status changes, renames), so that a search reads only the few
    -- dense pages of matching terms, not each matching official's row.
    agency_id    uuid NOT NULL,
    name         text NOT NULL,
    active       boolean NOT NULL,
    PRIMARY KEY (term, official_id)
);
CREATE INDEX official_terms_official ON official_terms (official_id);

CREATE TABLE agency_terms (
    term       text COLLATE "C" NOT NULL,
    agency_id  uuid NOT NULL,
    PRIMARY KEY (term, agency_id)
);
CREATE INDEX agency_terms_agency ON agency_terms (agency_id);

-- --- policy --------------------------------------------------------------------
-- One row per agency (NULL agency_id: the global row, superadmin only).
-- NULL fields inherit. The global row replaces the node's configured
-- defaults (retention can only be shortened: the node's value is a ceiling);
-- an agency's row can only tighten what is above it (the effective value is
-- the strictest along the path to the root). message_scope, strictest first:
-- 'agency' (same agency only), 'ministry' (same top-level agency), 'all'.

CREATE TABLE directory_policies (
    agency_id          uuid UNIQUE NULLS NOT DISTINCT REFERENCES agencies (id),
    message_scope      text CHECK (message_scope IN ('agency', 'ministry', 'all')),
    max_devices        integer CHECK (max_devices BETWEEN 1 AND 100),
    retention_seconds  integer CHECK (retention_seconds >= 60),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    updated_by         uuid REFERENCES officials (id)
);

-- --- enrolment codes: an id to list and cancel them by -------------------------

ALTER TABLE enrolment_codes
    ADD COLUMN id            uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN cancelled_at  timestamptz,
    ADD COLUMN cancelled_by  uuid REFERENCES officials (id);
CREATE UNIQUE INDEX enrolment_codes_id ON enrolment_codes (id);

CREATE INDEX devices_official ON devices (official_id);

-- --- bulk import staging ---------------------------------------------------------
-- Rows are staged chunk by chunk, then applied in one transaction (or not at
-- all). Staged rows are personal data: deleted on apply or discard, and
-- stale imports (older than a day) are swept when a new one begins.

CREATE TABLE directory_imports (
    id              uuid PRIMARY KEY,
    actor_official  uuid NOT NULL REFERENCES officials (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE directory_import_rows (
    import_id    uuid NOT NULL REFERENCES directory_imports (id) ON DELETE CASCADE,
    line         integer NOT NULL,
    employee_id  text,
    name_th      text,
    name_en      text,
    position     text,
    agency_code  text,
    email        text,
    phone        text,
    PRIMARY KEY (import_id, line)
);
