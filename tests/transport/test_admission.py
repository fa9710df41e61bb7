"""Connection cap and frame bucket (pure unit tests; the end-to-end ones are in
tests/transport/test_abuse.py)."""

from gchat.runtime.ratelimit import Limit
from gchat.transport.admission import ConnectionCap, FrameBucket, parse_networks


def test_cap_counts_per_address_and_exempts_listed_networks() -> None:
    cap = ConnectionCap(2, parse_networks("127.0.0.0/8, 10.1.0.0/16"))
    assert cap.opened("192.0.2.1") and cap.opened("192.0.2.1")
    assert cap.full("192.0.2.1")
    assert not cap.opened("192.0.2.1")  # raced past the HTTP check: refused here
    assert not cap.full("192.0.2.2")
    for _ in range(100):
        assert cap.opened("10.1.2.3") and cap.opened("127.0.0.1")
    assert cap.exempt("::ffff:10.1.2.3")  # an IPv4-mapped IPv6 peer is the same host
    assert not cap.exempt("not-an-address")
    for _ in range(3):
        cap.closed("192.0.2.1")
    assert cap.open_from("192.0.2.1") == 0 and not cap.full("192.0.2.1")


def test_zero_means_no_cap() -> None:
    cap = ConnectionCap(0)
    assert all(cap.opened("192.0.2.1") for _ in range(1000))


def test_frame_bucket_refuses_then_gives_up_on_the_client() -> None:
    now = [0.0]
    bucket = FrameBucket(Limit(5, 10), max_refused=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    assert 0 < bucket.retry_after <= 0.1
    assert [bucket.take() for _ in range(3)] == [False] * 3
    assert bucket.exhausted
    now[0] += 0.1  # one token back: a frame is accepted, but the client is not forgiven
    assert bucket.take() and bucket.exhausted
    now[0] += 0.3  # half the bucket back: it slowed down
    assert bucket.take() and not bucket.exhausted
