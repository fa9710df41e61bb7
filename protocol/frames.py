"""Every frame of protocol version 1, as msgspec Structs in two tagged unions.

Each frame is a map with a ``type`` tag. Requests from the client carry a
``rid`` (request id, chosen by the client); the server's reply to that request
carries the same ``rid``. Frames the server pushes on its own (``deliver``,
``queue_empty``, ``prekeys_low``) carry none.

Types on the wire: ``bytes`` is base64 (RFC 4648, padded) in JSON and ``bin``
in MessagePack; ``UUID`` is the canonical 36-character string in both.
Unknown fields are refused, so a typo is an error, not a silent no-op.
"""

import hashlib
from datetime import datetime
from typing import Annotated, Literal, get_args
from uuid import UUID

import msgspec

from protocol import limits

RequestId = Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_REQUEST_ID)]
Key32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
KeyId = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
#: Display text (names, titles, device names): also held to the display rule
#: of ``protocol.text`` (no bidi or zero-width characters; NFC).
Text = Annotated[
    str, msgspec.Meta(min_length=1, max_length=limits.MAX_TEXT, extra={"text": "display"})
]
ClientMessageId = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=limits.MAX_CLIENT_MESSAGE_ID, pattern=r"^[A-Za-z0-9_.:-]+\Z"
    ),
]
Ciphertext = Annotated[bytes, msgspec.Meta(min_length=1, max_length=limits.MAX_CIPHERTEXT_BYTES)]
Position = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Timestamp = Annotated[int, msgspec.Meta(ge=0)]  # milliseconds since the Unix epoch


def wire_time(moment: datetime) -> int:
    """A timezone-aware time as the wire carries it: whole ms since the epoch."""
    return int(moment.timestamp() * 1000)


class _Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    """Base of every frame: tagged by ``type``, strict about fields."""


# --- shared parts -----------------------------------------------------------


class Prekey(msgspec.Struct, forbid_unknown_fields=True):
    """A one-time X25519 prekey."""

    key_id: KeyId
    public_key: Key32


class SignedPrekey(msgspec.Struct, forbid_unknown_fields=True):
    """An X25519 prekey signed by the device's identity key (see docs/PROTOCOL.md, Part II)."""

    key_id: KeyId
    public_key: Key32
    signature: Signature


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """One recipient device's copy of a message: opaque ciphertext."""

    device_id: UUID
    ciphertext: Ciphertext


class DeviceBundle(msgspec.Struct, forbid_unknown_fields=True):
    """What a sender needs to start a session with one device."""

    device_id: UUID
    certificate: bytes
    signed_prekey: SignedPrekey
    one_time_prekey: Prekey | None


# --- client -> server -------------------------------------------------------


class Auth(_Frame, tag="auth"):
    """Authenticate an enrolled device by signing the connection's challenge."""

    rid: RequestId
    device_id: UUID
    signature: Signature
    #: False: a request-only connection (admin, import, audit tools): it gets no
    #: deliveries, does not displace the device's connection and is not displaced.
    deliveries: bool = True


class AuthToken(_Frame, tag="auth_token"):
    """Authenticate with an access token from an earlier ``authenticated``."""

    rid: RequestId
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_TOKEN)]
    deliveries: bool = True  # as in Auth


class Enroll(_Frame, tag="enroll"):
    """Enrol a new device with a one-time code; authenticates the connection."""

    rid: RequestId
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_CODE)]
    identity_key: Key32
    signature: Signature  # identity key over the challenge: proof of possession
    signed_prekey: SignedPrekey
    one_time_prekeys: Annotated[
        list[Prekey], msgspec.Meta(max_length=limits.MAX_PREKEYS_PER_UPLOAD)
    ]
    device_name: Text
    platform: Text


class CreateOfficial(_Frame, tag="create_official"):
    """Admin: add an official to an agency (default: the admin's own).

    ``name`` fills ``name_th`` if it is in Thai script, else ``name_en``,
    unless that field is given too (directory administration).
    """

    rid: RequestId
    name: Text
    agency_id: UUID | None = None
    name_th: Text | None = None
    name_en: Text | None = None
    position: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    employee_id: Text | None = None


class IssueCode(_Frame, tag="issue_code"):
    """Admin: issue a one-time enrolment code for an official."""

    rid: RequestId
    official_id: UUID


class UploadPrekeys(_Frame, tag="upload_prekeys"):
    """Add one-time prekeys and optionally replace the signed prekey."""

    rid: RequestId
    one_time_prekeys: Annotated[
        list[Prekey], msgspec.Meta(max_length=limits.MAX_PREKEYS_PER_UPLOAD)
    ]
    signed_prekey: SignedPrekey | None = None


class GetBundle(_Frame, tag="get_bundle"):
    """Fetch key bundles for an official's active devices (or only ``device_ids``).

    Each bundle claims one of that device's one-time prekeys, so a client asks
    only for the devices it has no session with.
    """

    rid: RequestId
    official_id: UUID
    device_ids: (
        Annotated[list[UUID], msgspec.Meta(max_length=limits.MAX_RECIPIENT_DEVICES)] | None
    ) = None


class Send(_Frame, tag="send"):
    """Send one message: one envelope per recipient device.

    The envelopes must cover exactly the recipient official's active devices
    plus the sender's own other active devices, or the server answers
    ``device_mismatch``.
    """

    rid: RequestId
    client_message_id: ClientMessageId
    recipient: UUID
    envelopes: Annotated[
        list[Envelope], msgspec.Meta(min_length=1, max_length=limits.MAX_RECIPIENT_DEVICES)
    ]


class Ack(_Frame, tag="ack"):
    """Acknowledge delivered envelopes by inbox position; deletes them."""

    positions: Annotated[
        list[Position], msgspec.Meta(min_length=1, max_length=limits.MAX_ACK_POSITIONS)
    ]


# --- server -> client -------------------------------------------------------


class Challenge(_Frame, tag="challenge"):
    """First frame of every connection: sign it to authenticate."""

    server_id: str
    nonce: Key32


class Authenticated(_Frame, tag="authenticated"):
    """The connection is authenticated; the token allows a later reconnect."""

    rid: RequestId
    device_id: UUID
    official_id: UUID
    agency_id: UUID
    roles: list[str]
    token: str
    token_expires_at: Timestamp


class Enrolled(_Frame, tag="enrolled"):
    """The device is enrolled (and the connection authenticated)."""

    rid: RequestId
    device_id: UUID
    official_id: UUID
    agency_id: UUID
    roles: list[str]
    certificate: bytes
    directory_key: Key32
    token: str
    token_expires_at: Timestamp


class OfficialCreated(_Frame, tag="official_created"):
    rid: RequestId
    official_id: UUID
    agency_id: UUID


class CodeIssued(_Frame, tag="code_issued"):
    rid: RequestId
    official_id: UUID
    code: str
    expires_at: Timestamp


class PrekeysStored(_Frame, tag="prekeys_stored"):
    """Upload done; ``available`` is the device's one-time prekey stock now."""

    rid: RequestId
    available: int


class Bundle(_Frame, tag="bundle"):
    rid: RequestId
    official_id: UUID
    devices: list[DeviceBundle]


class Accepted(_Frame, tag="accepted"):
    """The message is committed; a retry with the same client id gets this again."""

    rid: RequestId
    message_id: UUID
    server_time: Timestamp


class Deliver(_Frame, tag="deliver", omit_defaults=True):
    """One envelope from the device's inbox, in position order.

    ``kind`` and ``conversation_id`` are absent for a pairwise message; a
    ``group`` message carries the sender-key ciphertext, a ``membership``
    event a ``SignedMembershipEvent`` (see "Conversations and groups").
    """

    position: Position
    message_id: UUID
    sender_official: UUID
    sender_device: UUID
    sent_at: Timestamp
    ciphertext: bytes
    kind: Literal["pairwise", "group", "membership"] = "pairwise"
    conversation_id: UUID | None = None


class QueueEmpty(_Frame, tag="queue_empty"):
    """Everything queued when the connection authenticated has been pushed."""


class PrekeysLow(_Frame, tag="prekeys_low"):
    """The device's one-time prekey stock fell below the refill threshold."""

    available: int


class Error(_Frame, tag="error"):
    """A request failed, or (``rid`` null) a frame could not be read."""

    rid: RequestId | None
    code: str
    message: str
    missing: list[UUID] = []
    stale: list[UUID] = []
    retry_after: float | None = None


# --- conversations and groups ------------------------------------------------
# (Group conversations issue.) Requests, the reply, and the server-signed
# membership event that travels inside ``deliver`` (kind "membership") and
# ``conversation`` frames. See docs/PROTOCOL.md, "Conversations and groups".

#: Ed25519 signatures over membership events are made with the directory key
#: over this label followed by the event's MessagePack bytes.
MEMBERSHIP_SIGNATURE_LABEL = b"gchat.membership.v1"

Officials = Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=limits.MAX_GROUP_MEMBERS)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
MembershipAction = Literal[
    "created", "added", "removed", "left", "promoted", "demoted", "renamed", "announcement"
]


class OpenDirect(_Frame, tag="open_direct"):
    """The direct conversation with one official (created on first use)."""

    rid: RequestId
    official_id: UUID


class CreateGroup(_Frame, tag="create_group"):
    """A new group; the creator is a member and its first admin."""

    rid: RequestId
    title: Text
    members: Annotated[list[UUID], msgspec.Meta(max_length=limits.MAX_GROUP_MEMBERS)]
    announcement_only: bool = False


class AddMembers(_Frame, tag="add_members"):
    rid: RequestId
    conversation_id: UUID
    officials: Officials


class RemoveMembers(_Frame, tag="remove_members"):
    rid: RequestId
    conversation_id: UUID
    officials: Officials


class LeaveGroup(_Frame, tag="leave_group"):
    rid: RequestId
    conversation_id: UUID


class SetGroupAdmin(_Frame, tag="set_group_admin"):
    """Promote (``admin`` true) or demote a member."""

    rid: RequestId
    conversation_id: UUID
    official_id: UUID
    admin: bool


class RenameGroup(_Frame, tag="rename_group"):
    rid: RequestId
    conversation_id: UUID
    title: Text


class SetAnnouncementOnly(_Frame, tag="set_announcement_only"):
    """In announcement-only mode only group admins may post."""

    rid: RequestId
    conversation_id: UUID
    announcement_only: bool


class GetConversation(_Frame, tag="get_conversation"):
    rid: RequestId
    conversation_id: UUID


class SendGroup(_Frame, tag="send_group"):
    """One sender-key ciphertext for every member device but the sender's.

    ``seq`` is the membership sequence number the sender encrypted for; if
    membership has changed since, the server answers ``stale_membership``.
    """

    rid: RequestId
    client_message_id: ClientMessageId
    conversation_id: UUID
    seq: Seq
    ciphertext: Ciphertext


class ConversationState(_Frame, tag="conversation"):
    """Reply to every conversation request: the latest signed membership event."""

    rid: RequestId
    conversation_id: UUID
    seq: Seq
    event: bytes  # a SignedMembershipEvent (MessagePack)


class GroupMember(msgspec.Struct, forbid_unknown_fields=True):
    official_id: UUID
    agency_id: UUID
    admin: bool


class MembershipEvent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One membership change, and a digest of the membership after it.

    ``seq`` is contiguous per conversation from 1 ("created"). Events in the
    inbox carry the change (``subjects``); a client applies it to the
    membership it knows and checks ``members_digest``. ``members`` (the whole
    membership) is present in "created" events and in snapshots (the
    ``conversation`` reply), so a client that missed a change resyncs there.
    """

    conversation_id: UUID
    seq: Seq
    action: MembershipAction
    actor_official: UUID
    actor_device: UUID
    #: The members the action is about: added ones, removed ones (as they
    #: were), the promoted or demoted one; every member for "created".
    subjects: list[GroupMember]
    kind: Literal["direct", "group"]
    title: str
    announcement_only: bool
    member_count: int
    members_digest: Key32  # see members_digest()
    at: Timestamp
    members: list[GroupMember] | None = None


def members_digest(members: list[GroupMember]) -> bytes:
    """SHA-256 of "gchat.members.v1" and, sorted by official id, each member's
    official id (16 bytes), agency id (16 bytes) and admin flag (1 byte)."""
    digest = hashlib.sha256(b"gchat.members.v1")
    for member in sorted(members, key=lambda m: m.official_id.bytes):
        digest.update(member.official_id.bytes + member.agency_id.bytes)
        digest.update(b"\x01" if member.admin else b"\x00")
    return digest.digest()


class SignedMembershipEvent(msgspec.Struct, forbid_unknown_fields=True):
    """Always MessagePack, whatever the connection's encoding."""

    event: bytes  # MessagePack of MembershipEvent
    signature: Signature  # directory key over MEMBERSHIP_SIGNATURE_LABEL || event


# --- audit operations (auditor role; access transparency for everyone) -------
#
# See docs/AUDIT.md. Hashes are raw bytes (base64 in JSON), entries are the
# exact canonical JSON text of the logged event (its UTF-8 bytes are the
# Merkle leaf data). Every request here is itself recorded in the audit log.

LeafIndex = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
AuditKind = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class AuditQuery(_Frame, tag="audit_query"):
    """Auditor: events matching every given filter, in event-id order, paged."""

    rid: RequestId
    official_id: UUID | None = None
    device_id: UUID | None = None
    agency_id: UUID | None = None  # this agency and its sub-agencies
    kinds: Annotated[list[AuditKind], msgspec.Meta(max_length=64)] = []
    since: Timestamp | None = None  # inclusive
    until: Timestamp | None = None  # exclusive
    after: Annotated[int, msgspec.Meta(ge=0)] = 0  # cursor: the last event id seen
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class AuditGetTreeHead(_Frame, tag="audit_get_tree_head"):
    """Auditor: the latest signed tree head; ``fresh`` asks the sequencer to sign now."""

    rid: RequestId
    fresh: bool = True


class AuditGetInclusion(_Frame, tag="audit_get_inclusion"):
    """Auditor: the entry at ``leaf_index`` and its inclusion proof in the tree of ``tree_size``."""

    rid: RequestId
    leaf_index: LeafIndex
    tree_size: LeafIndex


class AuditGetConsistency(_Frame, tag="audit_get_consistency"):
    """Auditor: proof that the tree of ``old_size`` is a prefix of the tree of ``new_size``."""

    rid: RequestId
    old_size: LeafIndex
    new_size: LeafIndex


class AuditExport(_Frame, tag="audit_export"):
    """Auditor: one page of the JSON Lines export of leaves [start, end).

    Against the signed head of ``tree_size`` (default: a fresh one); pass the
    reply's ``cursor`` (with the reply's ``tree_size``) to get the next page.
    """

    rid: RequestId
    start: LeafIndex = 0
    end: LeafIndex | None = None
    tree_size: LeafIndex | None = None
    cursor: LeafIndex | None = None


class AuditListAccesses(_Frame, tag="audit_list_accesses"):
    """Any official: auditors' requests that concerned my metadata (after a delay)."""

    rid: RequestId
    after: Annotated[int, msgspec.Meta(ge=0)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class AuditEventInfo(msgspec.Struct, forbid_unknown_fields=True):
    """One logged event: ``entry`` is its canonical JSON (the leaf data)."""

    id: int
    leaf_index: int | None  # None until the sequencer has given it a leaf
    kind: str
    time: Timestamp
    entry: str


class SignedTreeHead(msgspec.Struct, forbid_unknown_fields=True):
    """A tree head signed with the audit key (signed bytes: docs/AUDIT.md)."""

    tree_size: int
    timestamp_ms: Timestamp
    root_hash: Key32
    signature: Signature
    key_id: bytes


class AuditorName(msgspec.Struct, forbid_unknown_fields=True):
    """Who an auditor is, as the directory names them (access transparency)."""

    official_id: UUID
    name_th: str | None
    name_en: str | None
    agency_code: str


class AuditEvents(_Frame, tag="audit_events"):
    """Reply to ``audit_query`` / ``audit_list_accesses``; ``next_after`` None: no more.

    ``auditors``: for ``audit_list_accesses``, the directory's names of the
    auditors whose requests are listed (an official may not read their records)."""

    rid: RequestId
    events: list[AuditEventInfo]
    next_after: int | None
    auditors: list[AuditorName] = msgspec.field(default_factory=list)


class AuditTreeHead(_Frame, tag="audit_tree_head"):
    rid: RequestId
    head: SignedTreeHead


class AuditInclusion(_Frame, tag="audit_inclusion"):
    rid: RequestId
    leaf_index: int
    tree_size: int
    entry: str
    leaf_hash: Key32
    proof: list[bytes]
    head: SignedTreeHead | None  # the signed head of tree_size, if one was signed


class AuditConsistency(_Frame, tag="audit_consistency"):
    rid: RequestId
    old_size: int
    new_size: int
    proof: list[bytes]
    old_head: SignedTreeHead | None
    new_head: SignedTreeHead | None


class AuditExportPage(_Frame, tag="audit_export_page"):
    """JSON Lines (without newlines); ``cursor`` None: the export is complete."""

    rid: RequestId
    tree_size: int
    lines: list[str]
    cursor: int | None


# --- directory administration ------------------------------------------------
# (Directory administration issue.) Agencies, officials, roles, devices,
# enrolment codes, policy, bulk import, and the directory search every
# official may use. Each admin request is authorised by the actor's current
# roles and scope (see docs/PROTOCOL.md, "Directory administration").

RoleName = Literal["official", "agency_admin", "auditor", "superadmin"]
OfficialStatus = Literal["active", "suspended", "retired"]
MessageScope = Literal["agency", "ministry", "all"]
AgencyCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")]
#: Optional text in an update: absent/None keeps the value, "" clears it.
EditText = Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT, extra={"text": "display"})]
ImportText = Annotated[str, msgspec.Meta(max_length=limits.MAX_IMPORT_TEXT)]
PageOffset = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_PAGE)]


class AgencyInfo(msgspec.Struct, forbid_unknown_fields=True):
    id: UUID
    parent_id: UUID | None
    code: str
    name_th: str | None
    name_en: str | None
    depth: int = 0  # in a listing: levels below the listing's root


class RoleInfo(msgspec.Struct, forbid_unknown_fields=True):
    role: RoleName
    scope_agency_id: UUID | None  # None: everywhere (superadmin, global auditor)


class OfficialInfo(msgspec.Struct, forbid_unknown_fields=True):
    """The admin view of an official."""

    id: UUID
    agency_id: UUID
    agency_code: str
    name_th: str | None
    name_en: str | None
    position: str | None
    email: str | None
    phone: str | None
    employee_id: str | None
    status: OfficialStatus
    roles: list[RoleInfo]


class OfficialCard(msgspec.Struct, forbid_unknown_fields=True):
    """A search result: who it is, and the id to fetch bundles for and send to."""

    official_id: UUID
    name_th: str | None
    name_en: str | None
    position: str | None
    agency_id: UUID
    agency_code: str
    agency_name_th: str | None
    agency_name_en: str | None
    active_devices: int


class DeviceInfo(msgspec.Struct, forbid_unknown_fields=True):
    device_id: UUID
    name: str
    platform: str
    status: Literal["active", "revoked"]
    enrolled_at: Timestamp
    last_seen_at: Timestamp | None
    revoked_at: Timestamp | None
    #: A Web Push subscription is registered, and its push
    #: service's origin; the endpoint's path (the capability) and keys never leave the node.
    push: bool
    push_origin: str | None


class CodeInfo(msgspec.Struct, forbid_unknown_fields=True):
    """An enrolment code's record (the code itself is never stored)."""

    code_id: UUID
    state: Literal["pending", "used", "cancelled", "expired"]
    issued_by: UUID | None
    created_at: Timestamp
    expires_at: Timestamp
    device_id: UUID | None  # the device it enrolled, once used


class PolicyInfo(msgspec.Struct, forbid_unknown_fields=True):
    """A policy row; None fields inherit (from the parent, the global row, config)."""

    message_scope: MessageScope | None = None
    max_devices: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    retention_seconds: Annotated[int, msgspec.Meta(ge=60, le=2**31 - 1)] | None = None
    #: Largest attachment (ciphertext bytes) an official may upload.
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=1, le=2**62)] | None = None
    #: Attachment bytes an official may upload per UTC day.
    attachment_bytes_per_day: Annotated[int, msgspec.Meta(ge=1, le=2**62)] | None = None


class ImportRow(msgspec.Struct, forbid_unknown_fields=True):
    """One line of an HR export; checked by the server, which names what is wrong."""

    line: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
    employee_id: ImportText | None = None
    name_th: ImportText | None = None
    name_en: ImportText | None = None
    position: ImportText | None = None
    agency_code: ImportText | None = None
    email: ImportText | None = None
    phone: ImportText | None = None


class RowError(msgspec.Struct, forbid_unknown_fields=True):
    line: int
    field: str  # the column at fault ("" for the row as a whole)
    reason: str  # the node's sentence, in English
    #: Stable, for a client to word the problem in its own language (PROTOCOL.md
    #: "Import problems"); "" from a node older than the codes.
    code: str = ""
    ref_line: int | None = None  # "repeated": the line the value first appears on


class CreateAgency(_Frame, tag="create_agency"):
    """Admin: a new agency under ``parent_id`` (None: a new ministry, superadmin only)."""

    rid: RequestId
    code: AgencyCode
    name_th: Text | None = None
    name_en: Text | None = None
    parent_id: UUID | None = None


class UpdateAgency(_Frame, tag="update_agency"):
    """Admin: rename an agency or change its code (absent fields stay; "" clears a name)."""

    rid: RequestId
    agency_id: UUID
    code: AgencyCode | None = None
    name_th: EditText | None = None
    name_en: EditText | None = None


class MoveAgency(_Frame, tag="move_agency"):
    """Admin: put an agency (with its subtree) under another parent (None: top level)."""

    rid: RequestId
    agency_id: UUID
    parent_id: UUID | None


class ListAgencies(_Frame, tag="list_agencies"):
    """Admin or auditor: the agency tree under ``root_id`` (default: the actor's scope)."""

    rid: RequestId
    root_id: UUID | None = None


class UpdateOfficial(_Frame, tag="update_official"):
    """Admin: change names, position, contact (absent fields stay; "" clears)."""

    rid: RequestId
    official_id: UUID
    name_th: EditText | None = None
    name_en: EditText | None = None
    position: EditText | None = None
    email: EditText | None = None
    phone: EditText | None = None
    employee_id: EditText | None = None


class MoveOfficial(_Frame, tag="move_official"):
    """Admin (of both agencies): move an official to another agency."""

    rid: RequestId
    official_id: UUID
    agency_id: UUID


class SetOfficialStatus(_Frame, tag="set_official_status"):
    """Admin: suspend, reinstate (``active``) or retire an official.

    Suspending or retiring closes the official's connections on every node
    at once; retiring also revokes every device and pending code, and is final.
    """

    rid: RequestId
    official_id: UUID
    status: OfficialStatus


class GetOfficial(_Frame, tag="get_official"):
    rid: RequestId
    official_id: UUID


class ListOfficials(_Frame, tag="list_officials"):
    """Admin or auditor: officials of a subtree (default: the actor's scope), by name."""

    rid: RequestId
    agency_id: UUID | None = None
    status: OfficialStatus | None = None
    offset: PageOffset = 0
    limit: PageLimit = 100
    #: Keyset paging: the page after this official (a ``next_after``); what an
    #: export walks, each page costing the same at 400,000 officials as at 400.
    after: UUID | None = None
    #: Only officials (any status) with a name, position or agency term
    #: starting with every word, or whose employee id is the whole query.
    query: Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT)] = ""


class GrantRole(_Frame, tag="grant_role"):
    """Admin: grant a role, never wider than the actor's own."""

    rid: RequestId
    official_id: UUID
    role: RoleName
    scope_agency_id: UUID | None = None


class RevokeRole(_Frame, tag="revoke_role"):
    rid: RequestId
    official_id: UUID
    role: RoleName


class ListDevices(_Frame, tag="list_devices"):
    rid: RequestId
    official_id: UUID


class RevokeDevice(_Frame, tag="revoke_device"):
    """Admin: revoke a device (lost phone): its connections close on every node."""

    rid: RequestId
    device_id: UUID


class ListCodes(_Frame, tag="list_codes"):
    rid: RequestId
    official_id: UUID


class ListPendingCodes(_Frame, tag="list_pending_codes"):
    """Admin or auditor: the pending enrolment codes of a subtree (default: the
    caller's scope), soonest to expire first, keyset-paged by ``after`` (a code id)."""

    rid: RequestId
    agency_id: UUID | None = None
    after: UUID | None = None
    limit: PageLimit = 100


class CancelCode(_Frame, tag="cancel_code"):
    rid: RequestId
    code_id: UUID


class SetPolicy(_Frame, tag="set_policy"):
    """Admin: replace an agency's policy row (``agency_id`` None: the global row)."""

    rid: RequestId
    agency_id: UUID | None = None
    policy: PolicyInfo = msgspec.field(default_factory=PolicyInfo)


class GetPolicy(_Frame, tag="get_policy"):
    rid: RequestId
    agency_id: UUID | None = None


class SearchOfficials(_Frame, tag="search_officials"):
    """Any official: active officials whose names, position or agency start with
    every word of ``query`` (case-insensitive), whom policy lets the asker message."""

    rid: RequestId
    query: Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT)] = ""
    agency_id: UUID | None = None  # only this agency and its sub-agencies
    offset: PageOffset = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class ImportBegin(_Frame, tag="import_begin"):
    """Admin: start a bulk import of officials (rows follow in ``import_rows``)."""

    rid: RequestId


class ImportRows(_Frame, tag="import_rows"):
    """Admin: stage rows of an import; the reply names the bad ones.

    ``update``: a row whose ``employee_id`` is in the directory changes that
    official (names, position, contact, agency) instead of being refused."""

    rid: RequestId
    import_id: UUID
    rows: Annotated[list[ImportRow], msgspec.Meta(max_length=limits.MAX_IMPORT_ROWS)]
    update: bool = False


class ImportApply(_Frame, tag="import_apply"):
    """Admin: check every staged row again, then (unless ``dry_run``) create and
    (with ``update``) change them all in one transaction, or none if any row is bad."""

    rid: RequestId
    import_id: UUID
    dry_run: bool = True
    update: bool = False


class ImportDiscard(_Frame, tag="import_discard"):
    rid: RequestId
    import_id: UUID


class AgencyReply(_Frame, tag="agency"):
    rid: RequestId
    agency: AgencyInfo


class AgencyList(_Frame, tag="agencies"):
    rid: RequestId
    agencies: list[AgencyInfo]


class OfficialReply(_Frame, tag="official"):
    rid: RequestId
    official: OfficialInfo


class OfficialList(_Frame, tag="officials"):
    rid: RequestId
    officials: list[OfficialInfo]
    next_offset: int | None  # None: no more
    next_after: UUID | None = None  # the last official's id when there are more


class DeviceList(_Frame, tag="devices"):
    rid: RequestId
    official_id: UUID
    devices: list[DeviceInfo]


class DeviceRevoked(_Frame, tag="device_revoked"):
    rid: RequestId
    device_id: UUID


class CodeList(_Frame, tag="codes"):
    rid: RequestId
    official_id: UUID
    codes: list[CodeInfo]


class PendingCode(msgspec.Struct, forbid_unknown_fields=True):
    """A code not yet used, cancelled or expired, with whose it is."""

    code_id: UUID
    official_id: UUID
    name_th: str | None
    name_en: str | None
    agency_code: str
    issued_by: UUID | None
    created_at: Timestamp
    expires_at: Timestamp


class PendingCodes(_Frame, tag="pending_codes"):
    rid: RequestId
    codes: list[PendingCode]
    next_after: UUID | None  # the last code's id when there are more


class CodeCancelled(_Frame, tag="code_cancelled"):
    rid: RequestId
    code_id: UUID


class PolicyReply(_Frame, tag="policy"):
    """The row set on ``agency_id`` (None: global) and, for an agency, what applies."""

    rid: RequestId
    agency_id: UUID | None
    policy: PolicyInfo
    effective: PolicyInfo | None


class SearchResults(_Frame, tag="search_results"):
    rid: RequestId
    results: list[OfficialCard]
    next_offset: int | None


class ImportStarted(_Frame, tag="import_started"):
    rid: RequestId
    import_id: UUID


class ImportChecked(_Frame, tag="import_checked"):
    rid: RequestId
    import_id: UUID
    received: int
    errors: list[RowError]


class ImportResult(_Frame, tag="import_result"):
    """``applied`` False: nothing changed; ``errors`` lists the first problems.

    ``created``, ``updated``, ``unchanged``: what was done, or for a clean dry
    run what applying would do; ``error_count`` problems in ``bad_rows`` rows."""

    rid: RequestId
    import_id: UUID
    dry_run: bool
    applied: bool
    rows: int
    created: int
    error_count: int
    errors: list[RowError]
    updated: int = 0
    unchanged: int = 0
    bad_rows: int = 0


class ImportDiscarded(_Frame, tag="import_discarded"):
    rid: RequestId
    import_id: UUID


# --- push notifications (docs/PROTOCOL.md "Push notifications") -------------

#: A Web Push endpoint: an https URL (checked further by the server).
PushEndpoint = Annotated[
    str,
    msgspec.Meta(min_length=9, max_length=limits.MAX_PUSH_ENDPOINT, pattern=r"^https://[!-~]+\Z"),
]


class GetPushConfig(_Frame, tag="get_push_config"):
    """Ask for the node's VAPID public key (and whether this device is registered)."""

    rid: RequestId


class RegisterPush(_Frame, tag="register_push"):
    """Register (or replace) this device's Web Push subscription (RFC 8030/8291)."""

    rid: RequestId
    endpoint: PushEndpoint
    #: The subscription's P-256 public key, uncompressed (65 bytes, 0x04 first).
    p256dh: Annotated[bytes, msgspec.Meta(min_length=65, max_length=65)]
    #: The subscription's authentication secret (16 bytes).
    auth: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]


class UnregisterPush(_Frame, tag="unregister_push"):
    """Remove this device's Web Push subscription (signing out)."""

    rid: RequestId


class PushConfig(_Frame, tag="push_config"):
    rid: RequestId
    #: The node's VAPID public key (RFC 8292), uncompressed P-256 (65 bytes):
    #: the ``applicationServerKey`` of ``PushManager.subscribe``.
    vapid_public_key: bytes
    registered: bool


class PushRegistered(_Frame, tag="push_registered"):
    rid: RequestId


class PushUnregistered(_Frame, tag="push_unregistered"):
    rid: RequestId
    #: False when the device had no subscription.
    removed: bool


# --- attachments (docs/PROTOCOL.md "Attachments") ------------------------------------

AttachmentSize = Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_ATTACHMENT_BYTES)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_ATTACHMENT_BYTES)]
Capability = Annotated[
    bytes, msgspec.Meta(min_length=limits.CAPABILITY_BYTES, max_length=limits.CAPABILITY_BYTES)
]
Chunk = Annotated[bytes, msgspec.Meta(min_length=1, max_length=limits.MAX_CHUNK_BYTES)]


class UploadBegin(_Frame, tag="upload_begin"):
    """Announce an attachment of ``size`` ciphertext bytes for one official or one group.

    Exactly one of ``recipient`` and ``conversation_id``: the devices that
    may download are those a message to them is addressed to now.
    """

    rid: RequestId
    size: AttachmentSize
    recipient: UUID | None = None
    conversation_id: UUID | None = None


class UploadResume(_Frame, tag="upload_resume"):
    """Where an unfinished upload of ours stands (after a dropped connection)."""

    rid: RequestId
    attachment_id: UUID


class UploadChunk(_Frame, tag="upload_chunk"):
    rid: RequestId
    attachment_id: UUID
    capability: Capability
    offset: Offset
    data: Chunk


class DownloadBegin(_Frame, tag="download_begin"):
    rid: RequestId
    attachment_id: UUID


class DownloadChunk(_Frame, tag="download_chunk"):
    rid: RequestId
    attachment_id: UUID
    capability: Capability
    offset: Offset
    length: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_CHUNK_BYTES)]


class DownloadDone(_Frame, tag="download_done"):
    """This device has the attachment: the node may forget it once every device has."""

    rid: RequestId
    attachment_id: UUID


class UploadReady(_Frame, tag="upload_ready"):
    """Reply to ``upload_begin`` and ``upload_resume``: send chunks from ``offset``."""

    rid: RequestId
    attachment_id: UUID
    size: int
    offset: int
    capability: bytes
    expires_at: Timestamp  # the capability's
    max_chunk: int


class UploadProgress(_Frame, tag="upload_progress"):
    rid: RequestId
    attachment_id: UUID
    offset: int  # bytes stored
    complete: bool


class DownloadReady(_Frame, tag="download_ready"):
    rid: RequestId
    attachment_id: UUID
    size: int
    capability: bytes
    expires_at: Timestamp
    max_chunk: int


class AttachmentChunk(_Frame, tag="attachment_chunk"):
    rid: RequestId
    attachment_id: UUID
    offset: int
    data: bytes


class DownloadClosed(_Frame, tag="download_closed"):
    rid: RequestId
    attachment_id: UUID


ClientFrame = (
    Auth
    | AuthToken
    | Enroll
    | CreateOfficial
    | IssueCode
    | UploadPrekeys
    | GetBundle
    | Send
    | Ack
    | SearchOfficials
    | CreateAgency
    | UpdateAgency
    | MoveAgency
    | ListAgencies
    | UpdateOfficial
    | MoveOfficial
    | SetOfficialStatus
    | GetOfficial
    | ListOfficials
    | GrantRole
    | RevokeRole
    | ListDevices
    | RevokeDevice
    | ListCodes
    | ListPendingCodes
    | CancelCode
    | SetPolicy
    | GetPolicy
    | ImportBegin
    | ImportRows
    | ImportApply
    | ImportDiscard
    | OpenDirect
    | CreateGroup
    | AddMembers
    | RemoveMembers
    | LeaveGroup
    | SetGroupAdmin
    | RenameGroup
    | SetAnnouncementOnly
    | GetConversation
    | SendGroup
    | AuditQuery
    | AuditGetTreeHead
    | AuditGetInclusion
    | AuditGetConsistency
    | AuditExport
    | AuditListAccesses
    | GetPushConfig
    | RegisterPush
    | UnregisterPush
    | UploadBegin
    | UploadResume
    | UploadChunk
    | DownloadBegin
    | DownloadChunk
    | DownloadDone
)
ServerFrame = (
    Challenge
    | Authenticated
    | Enrolled
    | OfficialCreated
    | CodeIssued
    | PrekeysStored
    | Bundle
    | Accepted
    | Deliver
    | QueueEmpty
    | PrekeysLow
    | Error
    | AgencyReply
    | AgencyList
    | OfficialReply
    | OfficialList
    | DeviceList
    | DeviceRevoked
    | CodeList
    | PendingCodes
    | CodeCancelled
    | PolicyReply
    | SearchResults
    | ImportStarted
    | ImportChecked
    | ImportResult
    | ImportDiscarded
    | ConversationState
    | AuditEvents
    | AuditTreeHead
    | AuditInclusion
    | AuditConsistency
    | AuditExportPage
    | PushConfig
    | PushRegistered
    | PushUnregistered
    | UploadReady
    | UploadProgress
    | DownloadReady
    | AttachmentChunk
    | DownloadClosed
)

CLIENT_FRAME_TYPES: tuple[type[_Frame], ...] = get_args(ClientFrame)
SERVER_FRAME_TYPES: tuple[type[_Frame], ...] = get_args(ServerFrame)
