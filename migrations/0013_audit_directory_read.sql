-- G-Chat schema, version 13: the audit kind "audit.directory_read" (an
-- auditor's read of directory records: officials, their devices and codes).
-- Kinds are stored by their position in gchat/store/audit_codec.py KINDS and
-- the entry's "kind" text as a phrase marker, so the SQL decoder learns the
-- new phrase: the same function as migration 0010 with the phrase table
-- grown at its end (every earlier position unchanged). Forward-only.

-- The canonical JSON of a stored entry (audit_codec.decode, in SQL).
CREATE OR REPLACE FUNCTION audit_entry_json(e bytea, at timestamptz) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
DECLARE
    phrases text[] := ARRAY[',"actor_device":', ',"actor_official":', ',"agency":', ',"details":', ',"kind":', ',"subject_device":', ',"subject_official":', ',"time":', ',"v":', ',"message_id":', ',"sent_at":', ',"ciphertext_bytes":', ',"recipient_devices":', ',"conversation_id":', ',"message_kind":', ',"position":', ',"sender_official":', ',"sender_device":', ',"method":', ',"remote":', ',"device_name":', ',"platform":', ',"one_time_prekeys":', ',"bundle_devices":', ',"one_time_prekeys_claimed":', ',"returned":', ',"queried_officials":', ',"after_id":', ',"filter_official":', ',"filter_device":', ',"filter_agency":', ',"filter_kinds":', ',"filter_since":', ',"filter_until":', ',"leaf_index":', ',"tree_size":', ',"old_size":', ',"new_size":', ',"start":', ',"end":', ',"fresh":', ',"count":', ',"reasons":', ',"first_at":', ',"last_at":', ',"window_seconds":', ',"claimed_devices":', ',"members":', ',"member_devices":', ',"agency_code":', ',"role":', ',"via":', '{"actor_device":', '{"actor_official":', '{"agency":', '{"details":', '{"kind":', '{"subject_device":', '{"subject_official":', '{"time":', '{"v":', '{"message_id":', '{"sent_at":', '{"ciphertext_bytes":', '{"recipient_devices":', '{"conversation_id":', '{"message_kind":', '{"position":', '{"sender_official":', '{"sender_device":', '{"method":', '{"remote":', '{"device_name":', '{"platform":', '{"one_time_prekeys":', '{"bundle_devices":', '{"one_time_prekeys_claimed":', '{"returned":', '{"queried_officials":', '{"after_id":', '{"filter_official":', '{"filter_device":', '{"filter_agency":', '{"filter_kinds":', '{"filter_since":', '{"filter_until":', '{"leaf_index":', '{"tree_size":', '{"old_size":', '{"new_size":', '{"start":', '{"end":', '{"fresh":', '{"count":', '{"reasons":', '{"first_at":', '{"last_at":', '{"window_seconds":', '{"claimed_devices":', '{"members":', '{"member_devices":', '{"agency_code":', '{"role":', '{"via":', '"message.accepted"', '"message.delivered"', '"auth.succeeded"', '"auth.failed"', '"device.enrolled"', '"device.enrolment_refused"', '"keys.bundle_fetched"', '"audit.query"', '"audit.tree_head"', '"audit.inclusion_proof"', '"audit.consistency_proof"', '"audit.export"', '"admin.bootstrap"', '"admin.official_created"', '"admin.code_issued"', '"admin.device_revoked"', '"admin.official_suspended"', '"admin.official_reinstated"', '"admin.official_retired"', '"admin.official_updated"', '"admin.official_moved"', '"admin.officials_imported"', '"admin.role_granted"', '"admin.role_revoked"', '"admin.agency_created"', '"admin.agency_updated"', '"admin.agency_moved"', '"admin.policy_set"', '"admin.code_cancelled"', '"conversation.direct_created"', '"conversation.group_created"', '"conversation.members_added"', '"conversation.members_removed"', '"conversation.members_left"', '"conversation.renamed"', '"conversation.announcement_set"', '"audit.directory_read"'];
    q bytea := '\x22';
    k integer;
    o integer;
    pos integer;
    j integer;
    b integer;
    n integer := length(e);
    ids bytea;
    out bytea := '';
BEGIN
    IF get_byte(e, 0) < 255 THEN
        k := get_byte(e, 0); o := 3;
    ELSE
        k := get_byte(e, 1) * 256 + get_byte(e, 2); o := 7;
    END IF;
    ids := substring(e FROM o + 2 FOR 16 * k);
    pos := o + 1 + 16 * k;
    WHILE pos < n LOOP
        b := get_byte(e, pos);
        IF b >= 32 THEN
            j := pos;
            WHILE j < n AND get_byte(e, j) >= 32 LOOP j := j + 1; END LOOP;
            out := out || substring(e FROM pos + 1 FOR j - pos);
            pos := j;
        ELSIF b = 1 THEN
            out := out || q || audit_uuid_text(substring(ids FROM 16 * get_byte(e, pos + 1) + 1 FOR 16)) || q;
            pos := pos + 2;
        ELSIF b = 2 THEN
            out := out || q || audit_uuid_text(substring(ids FROM
                       16 * (get_byte(e, pos + 1) * 256 + get_byte(e, pos + 2)) + 1 FOR 16)) || q;
            pos := pos + 3;
        ELSIF b = 3 THEN
            out := out || q || audit_uuid_text(substring(e FROM pos + 2 FOR 16)) || q;
            pos := pos + 17;
        ELSIF b = 4 THEN
            out := out || q || audit_time_text(at) || q;
            pos := pos + 1;
        ELSIF b = 5 THEN
            out := out || convert_to(phrases[get_byte(e, pos + 1) + 1], 'UTF8');
            pos := pos + 2;
        ELSIF b = 6 THEN
            out := out || q || audit_time_text(audit_time(audit_int8(e, pos + 1))) || q;
            pos := pos + 9;
        ELSIF b = 7 THEN
            out := out || audit_uuid_text(substring(e FROM pos + 2 FOR 16));
            pos := pos + 17;
        ELSIF b = 8 THEN
            out := out || audit_time_text(audit_time(audit_int8(e, pos + 1)));
            pos := pos + 9;
        ELSE
            RAISE EXCEPTION 'audit entry: unknown marker % at %', b, pos;
        END IF;
    END LOOP;
    RETURN out;
END
$$;
