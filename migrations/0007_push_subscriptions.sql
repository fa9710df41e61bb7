-- Web Push subscriptions, one per device (docs/PROTOCOL.md "Push notifications").
--
-- endpoint, p256dh and auth are what the browser's PushManager gave the
-- device; the node needs them in clear to encrypt a push (RFC 8291), so
-- they cannot be kept as hashes. They reveal no message content: the
-- payload a node sends says only "new messages". The sender skips revoked
-- devices; unregister_push and a push service's 404/410 delete the row.

CREATE TABLE push_subscriptions (
    device_id   uuid PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    endpoint    text NOT NULL CHECK (endpoint LIKE 'https://%' AND length(endpoint) <= 1024),
    p256dh      bytea NOT NULL CHECK (length(p256dh) = 65),
    auth        bytea NOT NULL CHECK (length(auth) = 16),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The application role (docs/AUDIT.md section 4): registering replaces,
-- unregistering and a push service's 410 delete.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gchat_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON push_subscriptions TO gchat_app;
    END IF;
END
$$;
