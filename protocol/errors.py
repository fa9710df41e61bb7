"""Stable error codes, application close codes and the ProtocolError family.

Error codes are strings on the wire and never change meaning; clients switch
on them. Close codes follow RFC 6455 plus the 4000-4999 application range.

Exception tree::

    ProtocolError                 (root: the only thing decoding raises)
    +-- MalformedFrame            bytes that are not a frame of this codec
    +-- UnknownFrameType          a well-formed frame with an unknown "type"
    +-- InvalidField              a known frame whose fields break the schema
    +-- FrameTooLarge             bigger than limits.MAX_FRAME_BYTES
    +-- NotAllowedNow             a frame not allowed in the session's state now
        +-- NotAuthenticated
        +-- AlreadyAuthenticated
"""

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Codes sent in ``error`` frames. Stable: add, never rename."""

    MALFORMED_FRAME = "malformed_frame"
    UNKNOWN_FRAME_TYPE = "unknown_frame_type"
    INVALID_FIELD = "invalid_field"
    FRAME_TOO_LARGE = "frame_too_large"
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    AUTH_FAILED = "auth_failed"
    TOKEN_INVALID = "token_invalid"  # noqa: S105 (an error code, not a secret)
    ENROLMENT_CODE_INVALID = "enrolment_code_invalid"
    DEVICE_LIMIT = "device_limit"
    SIGNATURE_INVALID = "signature_invalid"
    PREKEY_LIMIT = "prekey_limit"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    DEVICE_MISMATCH = "device_mismatch"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    # conversations and groups
    NOT_A_MEMBER = "not_a_member"  # the actor is not a member of that conversation
    ANNOUNCEMENT_ONLY = "announcement_only"  # only group admins may post now
    GROUP_FULL = "group_full"  # the change would exceed the group size limit
    POLICY_REFUSED = "policy_refused"  # directory policy forbids these officials together
    STALE_MEMBERSHIP = "stale_membership"  # membership changed since the given seq
    # directory administration
    CONFLICT = "conflict"  # the name, code or id is already taken, or the state forbids it
    # attachments
    TOO_LARGE = "too_large"  # the attachment is over the size limit of the agency's policy
    QUOTA_EXCEEDED = "quota_exceeded"  # the official's attachment bytes for today are used up
    CAPABILITY_EXPIRED = "capability_expired"  # ask for a new one (upload_resume, download_begin)
    CAPABILITY_INVALID = "capability_invalid"  # not issued by this deployment for this device
    OFFSET_MISMATCH = "offset_mismatch"  # the chunk is not at the stored offset: upload_resume
    STORAGE_FULL = "storage_full"  # the node's attachment storage has no room; retry later


class CloseCode(IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000
    GOING_AWAY = 1001  # node stopping: reconnect to another node
    PROTOCOL_ERROR = 1002
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009  # frame over MAX_FRAME_BYTES
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # this address holds too many connections to the node
    AUTH_TIMEOUT = 4001  # no successful auth within the deadline
    REVOKED = 4403  # device revoked or official suspended
    DISPLACED = 4409  # the same device connected again elsewhere
    TOO_MANY_FRAMES = 4429  # went on sending frames after they were refused rate_limited


class ProtocolError(Exception):
    """Root of every error this package raises about peer input."""

    code: ErrorCode = ErrorCode.MALFORMED_FRAME

    def __init__(self, detail: str, rid: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        #: The request's id when the frame decoded far enough to have one
        #: (a text-rule refusal), so the client can match the error to it.
        self.rid = rid


class MalformedFrame(ProtocolError):
    code = ErrorCode.MALFORMED_FRAME


class UnknownFrameType(ProtocolError):
    code = ErrorCode.UNKNOWN_FRAME_TYPE


class InvalidField(ProtocolError):
    code = ErrorCode.INVALID_FIELD


class FrameTooLarge(ProtocolError):
    code = ErrorCode.FRAME_TOO_LARGE


class NotAllowedNow(ProtocolError):
    code = ErrorCode.NOT_AUTHENTICATED


class NotAuthenticated(NotAllowedNow):
    code = ErrorCode.NOT_AUTHENTICATED


class AlreadyAuthenticated(NotAllowedNow):
    code = ErrorCode.ALREADY_AUTHENTICATED
