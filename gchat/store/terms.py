"""Search terms: how names are cut and normalised for prefix search (pure).

The same ``normalise`` is applied to what is indexed and to what is searched,
in Python, so matching does not depend on the database's locale. NFKC unifies
the ways a Thai vowel can be typed (sara am as one code point or two) and
full-width Latin; ``casefold`` makes English case-insensitive (Thai has no
case). Every word is a term (a query is cut into words the same way, and
every query word must start some term); a Thai word that begins with a
title written glued to the name ("นายสมชาย") is also indexed without it.
"""

import re
import unicodedata
from collections.abc import Iterable

#: Longest term indexed (btree entries must stay small; names are <= 200 chars).
MAX_TERM = 200
#: Thai honorifics often written glued to the first name; indexed without them too.
THAI_TITLES = ("นางสาว", "นาง", "นาย", "ดร.", "ดร")
_SPLIT = re.compile(r"[\s,;:/()\[\]{}\"'|+&_-]+")
_THAI = re.compile("[\u0e00-\u0e7f]")


def has_thai(text: str) -> bool:
    return bool(_THAI.search(text))


def normalise(text: str) -> str:
    """NFKC, case-folded, runs of whitespace collapsed to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def words(query: str) -> list[str]:
    """The normalised words of a search query (empty ones dropped)."""
    return [w for w in _SPLIT.split(normalise(query)) if w]


def terms_of(texts: Iterable[str | None]) -> set[str]:
    """Every term under which these texts are found."""
    found: set[str] = set()
    for text in texts:
        if not text:
            continue
        for word in _SPLIT.split(normalise(text)):
            if not word:
                continue
            found.add(word)
            for title in THAI_TITLES:
                if word.startswith(title) and len(word) > len(title):
                    found.add(word[len(title) :])
                    break
    return {t[:MAX_TERM] for t in found if t}


def prefix_range(prefix: str) -> tuple[str, str]:
    """(low, high) such that ``low <= term < high`` iff term starts with ``prefix``.

    Valid for the code-point order of ``COLLATE "C"``.
    """
    last = ord(prefix[-1])
    if last >= 0x10FFFF:  # pragma: no cover - nobody types U+10FFFF
        return prefix, prefix + "\U0010ffff"
    following = 0xE000 if 0xD800 <= last + 1 <= 0xDFFF else last + 1  # skip surrogates
    return prefix, prefix[:-1] + chr(following)
