"""Enrolment codes (gchat.identity.codes) and the token-bucket rate limiter
(gchat.runtime.ratelimit)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gchat.errors import ServiceError
from gchat.identity import codes
from gchat.runtime.ratelimit import Limit, Limits, LocalRateLimiter
from protocol import limits
from protocol.errors import ErrorCode
from tests.support import FakeClock

# --- enrolment codes --------------------------------------------------------------


def test_alphabet_is_crockford_base32() -> None:
    assert len(codes.ALPHABET) == 32 == len(set(codes.ALPHABET))
    assert not set("ILOU") & set(codes.ALPHABET)
    assert codes.ALPHABET == "".join(sorted(codes.ALPHABET))


def test_generated_code_shape() -> None:
    for _ in range(50):
        code = codes.generate()
        groups = code.split("-")
        assert len(groups) == 4
        assert all(len(group) == 5 for group in groups)
        symbols = "".join(groups)
        assert len(symbols) == codes.LENGTH == 20
        assert set(symbols) <= set(codes.ALPHABET)
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}", code)
        assert len(code) == 23 <= limits.MAX_CODE


def test_generated_codes_are_unique() -> None:
    generated = [codes.generate() for _ in range(1000)]
    assert len(set(generated)) == 1000
    assert len({codes.code_hash(c) for c in generated}) == 1000


def test_generated_codes_use_the_whole_alphabet() -> None:
    seen = set("".join(codes.generate() for _ in range(200)).replace("-", ""))
    assert seen == set(codes.ALPHABET)


def test_normalise_is_identity_on_the_raw_symbols() -> None:
    code = codes.generate()
    assert codes.normalise(code) == code.replace("-", "")


@pytest.mark.parametrize(
    "typed",
    [
        "ABCDE-FGH1K-MNPQR-STVWX",
        "abcde-fgh1k-mnpqr-stvwx",
        "ABCDEFGH1KMNPQRSTVWX",
        "ABCDE FGH1K MNPQR STVWX",
        "  abcde - fghik - mnpqr - stvwx ",
        "ABCDE-FGHLK-MNPQR-STVWX",  # L read as 1
        "ABCDE-FGHlK-MNPQR-STVWX",
        "A-B-C-D-E-F-G-H-I-K-M-N-P-Q-R-S-T-V-W-X",
    ],
)
def test_normalise_forgives_case_separators_and_lookalikes(typed: str) -> None:
    assert codes.normalise(typed) == "ABCDEFGH1KMNPQRSTVWX"
    assert codes.code_hash(typed) == codes.code_hash("ABCDE-FGH1K-MNPQR-STVWX")


def test_o_is_read_as_zero() -> None:
    assert codes.normalise("o0O0o-00000-00000-00000") == "0" * 20


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=codes.ALPHABET, min_size=20, max_size=20), st.data())
def test_any_mangling_hashes_the_same(raw: str, data: st.DataObject) -> None:
    mangled = "".join(
        data.draw(st.sampled_from([ch, ch.lower()])) + data.draw(st.sampled_from(["", "-", " "]))
        for ch in raw
    )
    assert codes.code_hash(mangled) == codes.code_hash(raw)


def test_code_hash_is_stable_and_domain_separated() -> None:
    import hashlib

    code = "ABCDE-FGH1K-MNPQR-STVWX"
    digest = codes.code_hash(code)
    assert len(digest) == 32
    assert digest == codes.code_hash(code)
    assert digest == hashlib.sha256(b"gchat.code.v1ABCDEFGH1KMNPQRSTVWX").digest()
    assert digest != hashlib.sha256(b"ABCDEFGH1KMNPQRSTVWX").digest()


def test_code_hash_differs_per_code() -> None:
    assert codes.code_hash("ABCDE-FGH1K-MNPQR-STVWX") != codes.code_hash("ABCDE-FGH1K-MNPQR-STVWY")
    assert codes.code_hash("00000-00000-00000-00000") != codes.code_hash("00000-00000-00000-00001")


# --- rate limiter -------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> LocalRateLimiter:
    return LocalRateLimiter(clock=clock)


def refused(limiter: LocalRateLimiter, limit: Limits, key: str, cost: float = 1.0) -> float:
    """``check_now`` refuses with rate_limited; returns its retry_after."""
    with pytest.raises(ServiceError) as caught:
        limiter.check_now(limit, key, cost)
    assert caught.value.code == ErrorCode.RATE_LIMITED
    assert caught.value.retry_after is not None
    return caught.value.retry_after


def test_the_limits_table() -> None:
    assert Limits.MESSAGES.value == Limit(200, 50)
    assert Limits.BUNDLE_FETCHES.value == Limit(100, 2)
    assert Limits.ENROLMENT_ATTEMPTS.value == Limit(10, 10 / 3600)
    assert Limits.AUTH_FAILURES.value == Limit(20, 20 / 600)
    for limit in Limits:
        assert limit.value.capacity > 0 and limit.value.rate > 0


@pytest.mark.parametrize("limit", list(Limits), ids=lambda limit: limit.name)
def test_capacity_then_refusal_with_retry_after(limiter: LocalRateLimiter, limit: Limits) -> None:
    spec = limit.value
    for _ in range(int(spec.capacity)):
        limiter.check_now(limit, "k")
    retry = refused(limiter, limit, "k")
    assert retry == pytest.approx(1 / spec.rate)


def test_refusal_does_not_take_tokens(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    for _ in range(200):
        limiter.check_now(Limits.MESSAGES, "d")
    for _ in range(5):
        refused(limiter, Limits.MESSAGES, "d")
    clock.advance(1 / 50 + 1e-9)
    limiter.check_now(Limits.MESSAGES, "d")  # the refusals cost nothing


def test_retry_after_is_accurate(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    for _ in range(10):
        limiter.check_now(Limits.ENROLMENT_ATTEMPTS, "10.0.0.1")
    retry = refused(limiter, Limits.ENROLMENT_ATTEMPTS, "10.0.0.1")
    assert retry == pytest.approx(360.0)
    clock.advance(retry * 0.9)
    assert refused(limiter, Limits.ENROLMENT_ATTEMPTS, "10.0.0.1") == pytest.approx(36.0)
    clock.advance(retry * 0.1 + 1e-6)
    limiter.check_now(Limits.ENROLMENT_ATTEMPTS, "10.0.0.1")


def test_refill_over_time_up_to_capacity(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    for _ in range(100):
        limiter.check_now(Limits.BUNDLE_FETCHES, "d")
    refused(limiter, Limits.BUNDLE_FETCHES, "d")
    clock.advance(5)  # 2 per second: 10 tokens back
    for _ in range(10):
        limiter.check_now(Limits.BUNDLE_FETCHES, "d")
    refused(limiter, Limits.BUNDLE_FETCHES, "d")
    clock.advance(10_000)  # a long idle time refills to capacity, not beyond
    for _ in range(100):
        limiter.check_now(Limits.BUNDLE_FETCHES, "d")
    refused(limiter, Limits.BUNDLE_FETCHES, "d")


def test_cost_is_taken(limiter: LocalRateLimiter) -> None:
    limiter.check_now(Limits.BUNDLE_FETCHES, "d", cost=60)
    limiter.check_now(Limits.BUNDLE_FETCHES, "d", cost=40)
    assert refused(limiter, Limits.BUNDLE_FETCHES, "d", cost=4) == pytest.approx(2.0)


def test_keys_are_independent(limiter: LocalRateLimiter) -> None:
    for _ in range(10):
        limiter.check_now(Limits.ENROLMENT_ATTEMPTS, "10.0.0.1")
    refused(limiter, Limits.ENROLMENT_ATTEMPTS, "10.0.0.1")
    for _ in range(10):
        limiter.check_now(Limits.ENROLMENT_ATTEMPTS, "10.0.0.2")
    refused(limiter, Limits.ENROLMENT_ATTEMPTS, "10.0.0.2")


def test_limits_are_independent_for_one_key(limiter: LocalRateLimiter) -> None:
    for _ in range(100):
        limiter.check_now(Limits.BUNDLE_FETCHES, "device")
    refused(limiter, Limits.BUNDLE_FETCHES, "device")
    limiter.check_now(Limits.MESSAGES, "device")


def test_memory_is_bounded(clock: FakeClock) -> None:
    limiter = LocalRateLimiter(clock=clock, max_keys=3)
    for i in range(10):
        limiter.check_now(Limits.MESSAGES, f"k{i}")
    assert len(limiter) <= 3


def test_a_flood_of_new_keys_does_not_forgive_an_exhausted_bucket(clock: FakeClock) -> None:
    limiter = LocalRateLimiter(clock=clock, max_keys=50)
    for _ in range(10):
        limiter.check_now(Limits.ENROLMENT_ATTEMPTS, "guesser")
    refused(limiter, Limits.ENROLMENT_ATTEMPTS, "guesser")
    for i in range(1000):  # many other addresses, each touched once
        clock.advance(0.001)
        limiter.check_now(Limits.BUNDLE_FETCHES, f"flood-{i}", cost=0)
    refused(limiter, Limits.ENROLMENT_ATTEMPTS, "guesser")
    assert len(limiter) <= 50


def test_zero_cost_is_a_peek(limiter: LocalRateLimiter) -> None:
    """cost=0 takes nothing, but is refused once less than one token is left
    (gchat.identity.auth asks "may this address try at all?" with it)."""
    for _ in range(5):
        limiter.check_now(Limits.AUTH_FAILURES, "10.9.9.9", cost=0)
    for _ in range(20):
        limiter.check_now(Limits.AUTH_FAILURES, "10.9.9.9")
    refused(limiter, Limits.AUTH_FAILURES, "10.9.9.9")
    assert refused(limiter, Limits.AUTH_FAILURES, "10.9.9.9", cost=0) == pytest.approx(30.0)


def test_a_clock_going_backwards_refills_nothing(
    limiter: LocalRateLimiter, clock: FakeClock
) -> None:
    for _ in range(100):
        limiter.check_now(Limits.BUNDLE_FETCHES, "d")
    clock.advance(-50)
    refused(limiter, Limits.BUNDLE_FETCHES, "d")


async def test_async_check_takes_and_refuses(limiter: LocalRateLimiter) -> None:
    for _ in range(10):
        await limiter.check(Limits.ENROLMENT_ATTEMPTS, "10.0.0.9")
    with pytest.raises(ServiceError) as caught:
        await limiter.check(Limits.ENROLMENT_ATTEMPTS, "10.0.0.9")
    assert caught.value.code == ErrorCode.RATE_LIMITED
    assert caught.value.retry_after == pytest.approx(360.0)


def test_limit_overrides_parse_and_apply(clock: FakeClock) -> None:
    from gchat.runtime.ratelimit import Limit, parse_overrides

    table = parse_overrides("messages=3/1, BUNDLE_FETCHES = 1/0.5")
    assert table == {Limits.MESSAGES: Limit(3, 1), Limits.BUNDLE_FETCHES: Limit(1, 0.5)}
    limiter = LocalRateLimiter(clock=clock, table=table)
    for _ in range(3):
        limiter.check_now(Limits.MESSAGES, "d")
    assert refused(limiter, Limits.MESSAGES, "d") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="NAME=CAPACITY/PER_SECOND"):
        parse_overrides("messages=lots")
    with pytest.raises(ValueError):
        parse_overrides("teleports=1/1")
