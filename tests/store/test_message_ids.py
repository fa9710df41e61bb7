"""New message ids: random version-4 UUIDs that behave as ``uuid.UUID`` everywhere."""

import uuid

import msgspec

from gchat.store.messages import new_message_id


def test_message_ids_are_random_version_4_uuids_equal_to_their_standard_form() -> None:
    ids = [new_message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for made in ids[:200]:
        standard = uuid.UUID(bytes=made.bytes)
        assert isinstance(made, uuid.UUID)
        assert (made.version, made.variant) == (4, uuid.RFC_4122)
        assert made == standard and hash(made) == hash(standard)
        assert str(made) == str(standard)
        # The wire carries it as it carries any UUID.
        assert msgspec.msgpack.encode(made) == msgspec.msgpack.encode(standard)
        assert msgspec.json.encode(made) == msgspec.json.encode(standard)
    # Each of the 122 random bits varies (a fixed bit would be set in all or none).
    ored = anded = ids[0].int
    for made in ids[1:]:
        ored |= made.int
        anded &= made.int
    assert bin(ored & ~anded).count("1") == 122
