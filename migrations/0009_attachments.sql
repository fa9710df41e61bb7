-- Encrypted attachments (docs/PROTOCOL.md "Attachments"; issue 16).
--
-- The node stores each attachment's ciphertext as a blob in its attachment
-- storage (gchat.attachments.storage); these rows say who uploaded it, for
-- whom, how big, and who has fetched it. Nothing here names the file, its
-- type or its key: those travel inside the end-to-end message.

CREATE TABLE attachments (
    id                uuid PRIMARY KEY,
    uploader_device   uuid NOT NULL,
    uploader_official uuid NOT NULL,
    agency_id         uuid NOT NULL,
    -- exactly one of the two: whom the message carrying it is addressed to
    recipient         uuid,
    conversation_id   uuid,
    size              bigint NOT NULL CHECK (size > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    expires_at        timestamptz NOT NULL,
    CHECK ((recipient IS NULL) <> (conversation_id IS NULL))
);
CREATE INDEX attachments_expires ON attachments (expires_at);
CREATE INDEX attachments_incomplete ON attachments (created_at) WHERE completed_at IS NULL;

-- The devices that may download it (the addressed devices, fixed at upload).
CREATE TABLE attachment_recipients (
    attachment_id uuid NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
    device_id     uuid NOT NULL,
    fetched_at    timestamptz,
    PRIMARY KEY (attachment_id, device_id)
);

-- Bytes uploaded per official per UTC day, for the daily quota (kept after
-- the attachments themselves are deleted; one small row per official and day).
CREATE TABLE attachment_usage (
    official_id uuid NOT NULL,
    day         date NOT NULL,
    bytes       bigint NOT NULL,
    PRIMARY KEY (official_id, day)
);

-- Agency policy: largest attachment and bytes per official per day.
ALTER TABLE directory_policies
    ADD COLUMN max_attachment_bytes bigint CHECK (max_attachment_bytes >= 1),
    ADD COLUMN attachment_bytes_per_day bigint CHECK (attachment_bytes_per_day >= 1);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON attachments, attachment_recipients,
            attachment_usage TO gchat_app;
    END IF;
END
$$;
