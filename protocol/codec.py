"""JSON and MessagePack codecs for frames.

Decoding never raises anything but ``ProtocolError`` subclasses: msgspec's
decode errors become ``MalformedFrame`` (not JSON / MessagePack at all),
``UnknownFrameType`` (a known shape with an unknown ``type``) or
``InvalidField`` (schema violation, or on the server a string that breaks
the text rule of ``protocol.text``), each carrying a stable error code.
"""

from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from protocol import limits
from protocol.errors import (
    FrameTooLarge,
    InvalidField,
    MalformedFrame,
    ProtocolError,
    UnknownFrameType,
)
from protocol.frames import ClientFrame, ServerFrame
from protocol.text import TextRule
from protocol.version import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL

F = TypeVar("F")

_TAG_ERRORS = ("- at `$.type`", "Object missing required field `type`")


class _RidOnly(msgspec.Struct):
    """What a refused frame may still tell: its request id, if well formed."""

    rid: int | None = None


def _translate(error: msgspec.MsgspecError, rid: int | None) -> ProtocolError:
    """Map a msgspec error to our family; the text says where, never what."""
    text = str(error)
    if isinstance(error, msgspec.ValidationError):
        if text.endswith(_TAG_ERRORS):
            return UnknownFrameType(text, rid)
        return InvalidField(text, rid)
    return MalformedFrame(text)


def _valid_rid(value: int | None) -> int | None:
    return value if value is not None and 0 <= value <= limits.MAX_REQUEST_ID else None


def _byte_size(data: bytes | str) -> int:
    """Size on the wire; text is only encoded when it might be too big."""
    if isinstance(data, bytes) or len(data) * 4 <= limits.MAX_FRAME_BYTES:
        return len(data)
    return len(data.encode(errors="surrogatepass"))


class Codec(Generic[F]):
    """Decodes one direction's frames and encodes the other's.

    ``binary`` says which WebSocket frame kind carries this codec: the
    server sends bytes for MessagePack and str for JSON.
    """

    def __init__(
        self, subprotocol: str, incoming: type[F] | object, text_rule: TextRule | None = None
    ) -> None:
        self.subprotocol = subprotocol
        self._text_rule = text_rule
        self.binary = subprotocol == MSGPACK_SUBPROTOCOL
        #: Encodes a frame as the message's payload: MessagePack, or JSON in
        #: UTF-8 (what a text message carries on the wire).
        self.encode_payload: Callable[[object], bytes]
        if self.binary:
            self._msgpack: msgspec.msgpack.Decoder[F] = msgspec.msgpack.Decoder(incoming)
            self.encode_payload = msgspec.msgpack.Encoder().encode
        elif subprotocol == JSON_SUBPROTOCOL:
            self._json: msgspec.json.Decoder[F] = msgspec.json.Decoder(incoming)
            self.encode_payload = msgspec.json.Encoder().encode
        else:
            raise ValueError(f"unsupported subprotocol {subprotocol!r}")

    def decode(self, data: bytes | str) -> F:
        """Decode one WebSocket message into a frame, or raise ProtocolError."""
        if (len(data) if type(data) is bytes else _byte_size(data)) > limits.MAX_FRAME_BYTES:
            raise FrameTooLarge(f"frame exceeds {limits.MAX_FRAME_BYTES} bytes")
        try:
            if not self.binary:
                frame = self._json.decode(data)
            elif isinstance(data, str):
                raise MalformedFrame("text frame on a MessagePack connection")
            else:
                frame = self._msgpack.decode(data)
        except msgspec.MsgspecError as error:
            raise _translate(error, self._rid_of(data)) from None
        except RecursionError:
            raise MalformedFrame("frame nested too deeply") from None
        except UnicodeError:
            raise MalformedFrame("frame is not valid UTF-8") from None
        if self._text_rule is not None:
            frame = self._text_rule.apply(frame)
        return frame

    def _rid_of(self, data: bytes | str) -> int | None:
        """The ``rid`` of a frame the schema refused, so the refusal can carry it.

        Only a well-formed, in-range integer ``rid`` counts; anything else
        (including a document that is not an object) gives None.
        """
        try:
            if self.binary and isinstance(data, bytes):
                found = msgspec.msgpack.decode(data, type=_RidOnly)
            else:
                found = msgspec.json.decode(data, type=_RidOnly)
        except (msgspec.MsgspecError, RecursionError, UnicodeError):
            return None
        return _valid_rid(found.rid)

    def encode(self, frame: object) -> bytes | str:
        """Encode a frame as the WebSocket message to send."""
        data = self.encode_payload(frame)
        return data if self.binary else data.decode()


def server_codec(subprotocol: str) -> Codec[ClientFrame]:
    """The server's codec: decodes client frames (held to the text rule), encodes server frames."""
    return Codec(subprotocol, ClientFrame, TextRule())


def client_codec(subprotocol: str) -> Codec[ServerFrame]:
    """A client's codec: decodes server frames, encodes client frames."""
    return Codec(subprotocol, ServerFrame)


