"""New message ids: time-ordered version-7 UUIDs that behave as ``uuid.UUID`` everywhere."""

import time
import uuid

import msgspec

from gchat.store.messages import MessageIds


def test_message_ids_are_version_7_uuids_equal_to_their_standard_form() -> None:
    before = time.time_ns() // 1_000_000
    new_message_id = MessageIds().new
    ids = [new_message_id() for _ in range(2000)]  # several draws of random bits
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for made in ids[:200]:
        standard = uuid.UUID(bytes=made.bytes)
        assert isinstance(made, uuid.UUID)
        assert (made.version, made.variant) == (7, uuid.RFC_4122)
        assert made == standard and hash(made) == hash(standard)
        assert str(made) == str(standard)
        # The wire carries it as it carries any UUID.
        assert msgspec.msgpack.encode(made) == msgspec.msgpack.encode(standard)
        assert msgspec.json.encode(made) == msgspec.json.encode(standard)
    # The first 48 bits are the time it was made, in Unix milliseconds...
    stamps = [made.int >> 80 for made in ids]
    assert all(before <= stamp <= after for stamp in stamps)
    assert stamps == sorted(stamps)
    # ... and each of the other 74 bits but the version's and variant's varies.
    ored = anded = ids[0].int & ((1 << 80) - 1)
    for made in ids[1:]:
        ored |= made.int
        anded &= made.int
    assert bin((ored & ~anded) & ((1 << 80) - 1)).count("1") == 74


def test_ids_made_later_sort_after_earlier_ones() -> None:
    # What keeps a message's index entries on the newest pages: an id made
    # a millisecond later is greater than every id made before.
    new_message_id = MessageIds().new
    first = [new_message_id() for _ in range(50)]
    time.sleep(0.002)
    later = [new_message_id() for _ in range(50)]
    assert max(first) < min(later)
