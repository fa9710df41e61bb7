-- Conversations (direct and group), their members, and group message bodies
-- stored once for the whole conversation.
--
-- A group send stores its ciphertext once in message_bodies; each member
-- device gets an inbox row with a NULL ciphertext that points at that body
-- through its message id. The body is deleted when the last inbox row that
-- needs it is (ack or expiry). Membership events travel the same way (one
-- server-signed body, one inbox row per member device).

CREATE TABLE conversations (
    id                 uuid PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('direct', 'group')),
    -- The agency whose admins may act on the group (the creator's agency).
    agency_id          uuid NOT NULL REFERENCES agencies (id),
    created_by         uuid NOT NULL REFERENCES officials (id),
    title              text NOT NULL DEFAULT '',
    announcement_only  boolean NOT NULL DEFAULT false,
    -- Sequence number of the last membership event: contiguous from 1,
    -- bumped under this row's lock in the transaction making the change.
    seq                bigint NOT NULL DEFAULT 0,
    -- The last membership event exactly as signed (a signed snapshot of the
    -- conversation, returned by get_conversation).
    last_event         bytea,
    -- Direct conversations: the two officials, smaller id first (one per pair).
    direct_low         uuid REFERENCES officials (id),
    direct_high        uuid REFERENCES officials (id),
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (direct_low IS NOT NULL AND direct_high IS NOT NULL)),
    UNIQUE (direct_low, direct_high)
);

CREATE TABLE conversation_members (
    conversation_id  uuid NOT NULL REFERENCES conversations (id),
    official_id      uuid NOT NULL REFERENCES officials (id),
    admin            boolean NOT NULL DEFAULT false,
    joined_seq       bigint NOT NULL,
    joined_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, official_id)
);
CREATE INDEX conversation_members_official ON conversation_members (official_id);

-- What a message is: a pairwise send (one ciphertext per device, in inbox),
-- a group send or a membership event (one body in message_bodies).
ALTER TABLE messages
    ADD COLUMN kind text NOT NULL DEFAULT 'pairwise'
        CHECK (kind IN ('pairwise', 'group', 'membership')),
    ADD COLUMN conversation_id uuid REFERENCES conversations (id);
CREATE INDEX messages_conversation ON messages (conversation_id)
    WHERE conversation_id IS NOT NULL;

CREATE TABLE message_bodies (
    message_id  uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    body        bytea NOT NULL
);

-- A NULL ciphertext means: the message's body in message_bodies.
ALTER TABLE inbox ALTER COLUMN ciphertext DROP NOT NULL;
