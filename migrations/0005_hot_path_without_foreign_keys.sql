-- The send path without foreign-key triggers on its two hottest tables.
--
-- Each foreign key on messages and inbox ran one internal query per inserted
-- row and took a KEY SHARE lock on the referenced devices/officials rows,
-- which is also what made concurrent commit batches on different nodes
-- deadlock against the inbox-head row locks. The commit batch already
-- checks every reference in its own transaction (gchat.messaging
-- check_batch: sender and recipient officials active, envelope devices
-- exactly the active devices; the sender device is the authenticated one),
-- and devices and officials are never deleted (they are revoked, suspended
-- or retired), so the references cannot dangle. Measured: about a third of
-- the statement time of a 256-send batch (docs/PERFORMANCE.md).

ALTER TABLE messages DROP CONSTRAINT messages_sender_device_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_sender_official_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_recipient_official_fkey;
ALTER TABLE inbox DROP CONSTRAINT inbox_device_id_fkey;
ALTER TABLE inbox DROP CONSTRAINT inbox_message_id_fkey;
