"""The one text rule for every string a client sends.

Decoding already guarantees valid UTF-8 (msgspec refuses invalid bytes and
lone surrogates). This module adds what the schema cannot say:

* every string: no control characters (Unicode category Cc, U+0000 among
  them; PostgreSQL cannot even store U+0000, and the rest corrupt logs,
  CSV exports and terminals);
* display text (names, titles, device names: the ``DisplayText`` types in
  ``protocol.frames``, marked ``extra={"text": "display"}``): also no
  format characters (category Cf: bidi overrides and isolates, zero-width
  characters, the BOM) and no line or paragraph separators, because
  officials pick recipients by name and such characters let one name pass
  for another; then NFC normalisation, so that one name has one spelling.

A frame that breaks the rule is refused as a whole with ``invalid_field``
and a detail naming the field (``... - at `$.title```, like the schema's own
errors). The same ``problem`` function is used by the server's directory
checks (import rows report it per row), so there is one rule, not several.
"""

import unicodedata
from collections.abc import Callable
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from protocol.errors import InvalidField

#: The value of ``msgspec.Meta(extra={"text": ...})`` that marks display text.
DISPLAY: Final = "display"

_LINE_SEPARATORS: Final = frozenset({"\u2028", "\u2029"})


def problem(value: str, *, display: bool) -> str | None:
    """Why ``value`` breaks the text rule, or None when it is acceptable."""
    if value.isprintable():
        # No character of categories C* or Z* but the space: none of those
        # below. Checked in C, where the loop costs Python per character (a
        # 300,000-row import spent a sixth of its node CPU here).
        return None
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"contains control character U+{ord(char):04X}"
        if category == "Cs":  # only reachable from Python callers, not from the wire
            return f"contains surrogate U+{ord(char):04X}"
        if display and (category == "Cf" or char in _LINE_SEPARATORS):
            return f"contains invisible or bidi character U+{ord(char):04X}"
    return None


def clean(value: str, *, display: bool) -> str:
    """``value`` checked (ValueError with the reason) and, if display text, NFC."""
    reason = problem(value, display=display)
    if reason is not None:
        raise ValueError(reason)
    return unicodedata.normalize("NFC", value) if display else value


# A fixer takes a value and its path ("$.title") and returns the value to
# keep (an NFC-normalised string, or the same object), raising InvalidField.
_Fixer = Callable[[Any, str], Any]


def _string(display: bool) -> _Fixer:
    def fix(value: Any, path: str) -> Any:
        if not display and value.isprintable():  # most strings, checked in C at once
            return value
        try:
            return clean(value, display=display)
        except ValueError as error:
            raise InvalidField(f"{error} - at `{path}`") from None

    return fix


def _compile(info: mi.Type, display: bool = False) -> _Fixer | None:
    """A fixer for values of this type, or None when it holds no strings."""
    if isinstance(info, mi.Metadata):
        extra = info.extra or {}
        return _compile(info.type, display or extra.get("text") == DISPLAY)
    if isinstance(info, mi.StrType):
        return _string(display)
    if isinstance(info, mi.UnionType):
        members = [(m, _compile(m, display)) for m in info.types]
        return _union([(_python_type(m), fix) for m, fix in members if fix is not None])
    if isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        return _sequence(_compile(info.item_type, display))
    if isinstance(info, mi.StructType):
        return _struct(info)
    if isinstance(info, mi.DictType):
        return _mapping(_compile(info.key_type, display), _compile(info.value_type, display))
    return None  # numbers, bytes, UUIDs, literals, enums: nothing to check


def _python_type(info: mi.Type) -> type:
    while isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.StrType):
        return str
    if isinstance(info, mi.StructType):
        return info.cls
    if isinstance(info, mi.DictType):
        return dict
    if isinstance(info, mi.VarTupleType):
        return tuple
    if isinstance(info, mi.SetType):
        return set
    if isinstance(info, mi.FrozenSetType):
        return frozenset
    return list


def _union(members: list[tuple[type, _Fixer]]) -> _Fixer | None:
    if not members:
        return None

    def fix(value: Any, path: str) -> Any:
        for kind, member in members:
            if isinstance(value, kind):
                return member(value, path)
        return value

    return fix


def _sequence(item: _Fixer | None) -> _Fixer | None:
    if item is None:
        return None

    def fix(value: Any, path: str) -> Any:
        fixed = [item(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if all(a is b for a, b in zip(fixed, value, strict=True)):
            return value
        return type(value)(fixed) if not isinstance(value, list) else fixed

    return fix


def _mapping(key: _Fixer | None, value: _Fixer | None) -> _Fixer | None:
    if key is None and value is None:
        return None

    def fix(mapping: Any, path: str) -> Any:
        return {
            (key(k, f"{path}.{k}") if key else k): (value(v, f"{path}.{k}") if value else v)
            for k, v in mapping.items()
        }

    return fix


def _struct(info: mi.StructType) -> _Fixer | None:
    fields = [(fld.name, fld.encode_name, _compile(fld.type)) for fld in info.fields]
    checked = [(name, wire, fix) for name, wire, fix in fields if fix is not None]
    if not checked:
        return None

    def fix(value: Any, path: str) -> Any:
        for name, wire, field_fix in checked:
            old = getattr(value, name)
            new = field_fix(old, f"{path}.{wire}")
            if new is not old:
                setattr(value, name, new)
        return value

    return fix


def _unknown(value: Any, path: str) -> Any:
    raise AssertionError("a marker, never called")


#: What ``TextRule._fixers`` holds for no frame type (None means "nothing to check").
_UNKNOWN: _Fixer = _unknown


class TextRule:
    """Applies the rule to decoded frames; one compiled checker per frame type."""

    def __init__(self) -> None:
        self._fixers: dict[type, _Fixer | None] = {}

    def apply(self, frame: Any) -> Any:
        """The frame with display text normalised, or InvalidField naming the field."""
        # The compiled fixer of a known frame type first: ``isinstance`` on
        # ``msgspec.Struct`` goes through its metaclass (0.16 us a frame).
        fixer = self._fixers.get(type(frame), _UNKNOWN)
        if fixer is _UNKNOWN:
            if not isinstance(frame, msgspec.Struct):
                return frame
            fixer = self._fixers[type(frame)] = _compile(mi.type_info(type(frame)))
        if fixer is None:
            return frame
        try:
            return fixer(frame, "$")
        except InvalidField as error:
            raise InvalidField(error.detail, rid=getattr(frame, "rid", None)) from None
