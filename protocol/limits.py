"""The one table of protocol limits.

The schema in ``frames`` enforces these as hard maxima at decode time, so an
oversized field is refused before the server looks at it. A deployment may set
lower values in its config (the server checks those), never higher ones.
"""

from typing import Final

KIB: Final = 1024

#: Largest WebSocket message the server accepts; bigger closes with 1009.
MAX_FRAME_BYTES: Final = 256 * KIB
#: Largest ciphertext in one envelope (the server never looks inside).
MAX_CIPHERTEXT_BYTES: Final = 96 * KIB
#: Most envelopes (recipient devices) in one send.
MAX_RECIPIENT_DEVICES: Final = 5000
#: Largest group conversation.
MAX_GROUP_MEMBERS: Final = 1000
#: Most one-time prekeys in one upload.
MAX_PREKEYS_PER_UPLOAD: Final = 100
#: Most positions acknowledged by one ack frame.
MAX_ACK_POSITIONS: Final = 1000
#: Length bounds of a client message id (idempotency key).
MAX_CLIENT_MESSAGE_ID: Final = 64
#: Longest free-text field (names, device names).
MAX_TEXT: Final = 200
#: Longest access token accepted.
MAX_TOKEN: Final = 2048
#: Longest enrolment code accepted (codes are shorter; this bounds garbage).
MAX_CODE: Final = 64
#: Largest request id (fits a signed 32-bit integer in every language).
MAX_REQUEST_ID: Final = 2**31 - 1
#: Most rows in one ``import_rows`` frame (the CLI also keeps frames small).
MAX_IMPORT_ROWS: Final = 500
#: Longest text in an imported row (the server refuses more than MAX_TEXT
#: per field with a row error; the schema bound only stops garbage).
MAX_IMPORT_TEXT: Final = 1000
#: Largest page of a listing or a search.
MAX_PAGE: Final = 500
#: Most words in a directory search query.
MAX_SEARCH_WORDS: Final = 8
#: Longest Web Push endpoint URL accepted by ``register_push``.
MAX_PUSH_ENDPOINT: Final = 1024
#: Largest piece of attachment ciphertext in one ``upload_chunk`` or
#: ``attachment_chunk`` frame (base64 in JSON still fits MAX_FRAME_BYTES).
MAX_CHUNK_BYTES: Final = 128 * KIB
#: Largest attachment the schema lets a client announce (the node's and the
#: agency policy's limits are lower; 100 MiB by default).
MAX_ATTACHMENT_BYTES: Final = 2**40
#: Size of an attachment capability (see docs/PROTOCOL.md, Attachments).
CAPABILITY_BYTES: Final = 50
