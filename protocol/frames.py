"""Every frame of protocol version 1, as msgspec Structs in two tagged unions.

Each frame is a map with a ``type`` tag. Requests from the client carry a
``rid`` (request id, chosen by the client); the server's reply to that request
carries the same ``rid``. Frames the server pushes on its own (``deliver``,
``queue_empty``, ``prekeys_low``) carry none.

Types on the wire: ``bytes`` is base64 (RFC 4648, padded) in JSON and ``bin``
in MessagePack; ``UUID`` is the canonical 36-character string in both.
Unknown fields are refused, so a typo is an error, not a silent no-op.
"""

from typing import Annotated, get_args
from uuid import UUID

import msgspec

from protocol import limits

RequestId = Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_REQUEST_ID)]
Key32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
KeyId = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_TEXT)]
ClientMessageId = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=limits.MAX_CLIENT_MESSAGE_ID, pattern=r"^[A-Za-z0-9_.:-]+\Z"
    ),
]
Ciphertext = Annotated[
    bytes, msgspec.Meta(min_length=1, max_length=limits.MAX_CIPHERTEXT_BYTES)
]
Position = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Timestamp = Annotated[int, msgspec.Meta(ge=0)]  # milliseconds since the Unix epoch


class _Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    """Base of every frame: tagged by ``type``, strict about fields."""


# --- shared parts -----------------------------------------------------------


class Prekey(msgspec.Struct, forbid_unknown_fields=True):
    """A one-time X25519 prekey."""

    key_id: KeyId
    public_key: Key32


class SignedPrekey(msgspec.Struct, forbid_unknown_fields=True):
    """An X25519 prekey signed by the device's identity key (see E2E.md)."""

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


class AuthToken(_Frame, tag="auth_token"):
    """Authenticate with an access token from an earlier ``authenticated``."""

    rid: RequestId
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_TOKEN)]


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
    """Admin: add an official to an agency (default: the admin's own)."""

    rid: RequestId
    name: Text
    agency_id: UUID | None = None


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
    device_ids: Annotated[
        list[UUID], msgspec.Meta(max_length=limits.MAX_RECIPIENT_DEVICES)
    ] | None = None


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


class Deliver(_Frame, tag="deliver"):
    """One envelope from the device's inbox, in position order."""

    position: Position
    message_id: UUID
    sender_official: UUID
    sender_device: UUID
    sent_at: Timestamp
    ciphertext: bytes


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
)

CLIENT_FRAME_TYPES: tuple[type[_Frame], ...] = get_args(ClientFrame)
SERVER_FRAME_TYPES: tuple[type[_Frame], ...] = get_args(ServerFrame)
