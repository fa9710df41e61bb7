-- G-Chat schema, version 1: directory, devices, prekeys, messages, inbox.
-- Forward-only: never edit this file once applied; add 0002_... instead.
-- No column here holds plaintext or private key material: message content
-- exists only as client ciphertext (inbox.ciphertext), codes only as hashes.

CREATE TABLE agencies (
    id          uuid PRIMARY KEY,
    parent_id   uuid REFERENCES agencies (id),
    code        text NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE officials (
    id          uuid PRIMARY KEY,
    agency_id   uuid NOT NULL REFERENCES agencies (id),
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'suspended', 'retired')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX officials_agency ON officials (agency_id);

-- A role with a scope: agency_admin and auditor act on the subtree rooted at
-- scope_agency_id (NULL = everywhere, used by superadmin and global auditors).
CREATE TABLE official_roles (
    official_id      uuid NOT NULL REFERENCES officials (id),
    role             text NOT NULL
                     CHECK (role IN ('official', 'agency_admin', 'auditor', 'superadmin')),
    scope_agency_id  uuid REFERENCES agencies (id),
    granted_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (official_id, role)
);

-- One-time enrolment codes, stored only as SHA-256 of the normalised code.
CREATE TABLE enrolment_codes (
    code_hash    bytea PRIMARY KEY CHECK (length(code_hash) = 32),
    official_id  uuid NOT NULL REFERENCES officials (id),
    issued_by    uuid REFERENCES officials (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    device_id    uuid
);
CREATE INDEX enrolment_codes_official ON enrolment_codes (official_id);

-- inbox_head is the last stream position handed out for the device's inbox;
-- positions are allocated under this row's lock, so they are contiguous and
-- commit in order for each device even with several writers.
CREATE TABLE devices (
    id            uuid PRIMARY KEY,
    official_id   uuid NOT NULL REFERENCES officials (id),
    identity_key  bytea NOT NULL UNIQUE CHECK (length(identity_key) = 32),
    certificate   bytea NOT NULL,
    name          text NOT NULL,
    platform      text NOT NULL,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    enrolled_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz,
    revoked_at    timestamptz,
    inbox_head    bigint NOT NULL DEFAULT 0
);
CREATE INDEX devices_official_active ON devices (official_id) WHERE status = 'active';

CREATE TABLE signed_prekeys (
    device_id   uuid PRIMARY KEY REFERENCES devices (id),
    key_id      bigint NOT NULL,
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    signature   bytea NOT NULL CHECK (length(signature) = 64),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE one_time_prekeys (
    device_id   uuid NOT NULL REFERENCES devices (id),
    key_id      bigint NOT NULL,
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    PRIMARY KEY (device_id, key_id)
);

-- Message metadata, kept for the retention period so that a retried send
-- (same device, same client id) gets the same answer and stores nothing.
CREATE TABLE messages (
    id                  uuid PRIMARY KEY,
    sender_device       uuid NOT NULL REFERENCES devices (id),
    sender_official     uuid NOT NULL REFERENCES officials (id),
    recipient_official  uuid REFERENCES officials (id),
    client_message_id   text NOT NULL,
    sent_at             timestamptz NOT NULL,
    UNIQUE (sender_device, client_message_id)
);
CREATE INDEX messages_sent_at ON messages (sent_at);

-- Per-device queues (Signal-Server's model): an ack deletes the row, and
-- with it the only copy of that device's ciphertext.
CREATE TABLE inbox (
    device_id   uuid NOT NULL REFERENCES devices (id),
    position    bigint NOT NULL,
    message_id  uuid NOT NULL REFERENCES messages (id),
    ciphertext  bytea NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (device_id, position)
);
CREATE INDEX inbox_expires_at ON inbox (expires_at);
CREATE INDEX inbox_message ON inbox (message_id);
