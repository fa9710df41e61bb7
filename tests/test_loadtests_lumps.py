"""The load generator's lump figures (``loadtests.scenarios.spread``): a stall
that held up every message in flight shows as a few windows of send time
far over the rest, a broad distribution as none; and the generator's own
collections (``loadtests.worker.Collections``), which would stall its pairs."""

import gc

from loadtests.scenarios import percentile, spread
from loadtests.worker import Collections


def _phase(
    worst_of: dict[int, float], windows: int = 40, each: int = 50
) -> tuple[list[float], list[int]]:
    """``each`` messages per window at 2-5 ms, the last of a window at its
    ``worst_of`` latency if given (else 5 ms)."""
    latencies: list[float] = []
    sent_in: list[int] = []
    for window in range(windows):
        for k in range(each - 1):
            latencies.append(2.0 + 3.0 * k / each)
            sent_in.append(window)
        latencies.append(worst_of.get(window, 5.0))
        sent_in.append(window)
    return latencies, sent_in


def test_a_stall_is_told_from_the_rest_of_the_phase() -> None:
    latencies, windows = _phase({7: 60.0, 8: 35.0})

    got = spread(latencies, windows)

    assert got["windows"] == 40
    assert got["window_max_p50_ms"] == 5.0
    assert got["lump_windows"] == 2  # 60 and 35 ms are over 3x the median window's 5 ms
    assert got["lump_share"] == 100 / 2000
    # Without the two windows the p99 is the flat distribution's.
    assert got["p99_outside_lumps_ms"] == 5.0
    assert got["window_max_ms"][7] == 60.0 and got["window_max_ms"][0] == 5.0


def test_a_broad_distribution_has_no_lump() -> None:
    # Every window's slowest message is slow, none far over the others'.
    latencies, windows = _phase({w: 10.0 + (w % 4) for w in range(40)})

    got = spread(latencies, windows)

    assert got["lump_windows"] == 0 and got["lump_share"] == 0.0
    assert got["p99_outside_lumps_ms"] == percentile(latencies, 99) == 11.0


def test_no_samples() -> None:
    got = spread([], [])

    assert got["windows"] == 0 and got["lump_windows"] == 0
    assert got["window_max_ms"] == []


def test_the_generators_own_collections_are_counted_while_installed() -> None:
    with Collections() as collections:
        gc.collect(0)
        gc.collect()
    gc.collect()  # after: not counted

    assert collections.passes == 2 and collections.full == 1
    assert collections.max_s > 0
    assert collections not in gc.callbacks
