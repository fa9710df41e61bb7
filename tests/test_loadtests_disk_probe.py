"""The disk probe beside each relay phase (``loadtests.disk_probe``): which
windows of send time had messages in flight while one of its flushes
stalled, and the probe's own process."""

import asyncio
from pathlib import Path

from loadtests.disk_probe import DiskProbe, overlapping, same_device


def test_a_lump_in_flight_during_a_stall_is_counted_and_the_rest_are_the_base_rate() -> None:
    # Windows of 100 ms from t = 10 s; window 5's slowest message took 60 ms,
    # the others 5 ms. One stall of 40 ms began at 10.53 s (in window 5); its
    # catch-up lasts until 10.61 s, into window 6, not 7.
    got = overlapping([(10.53, 40.0)], 10.0, 0.1, list(range(10)),
                      [5.0] * 5 + [60.0] + [5.0] * 4, [5])

    assert got == {"lump_windows": 1, "lump_windows_in_stall": 1,
                   "other_windows": 9, "other_windows_in_stall": 1}


def test_a_window_sent_after_the_stall_ended_counts_during_its_catch_up() -> None:
    # Windows of 50 ms. A stall of 50 ms from 10.0 s ended at 10.05; the
    # commits it held back clear until about 10.1. Window 1, sent from 10.05
    # (after the stall), counts; window 2, sent from 10.1, is past the catch-up.
    assert overlapping([(10.0, 50.0)], 10.0, 0.05, [1, 2], [30.0, 5.0], [1, 2]) == {
        "lump_windows": 2, "lump_windows_in_stall": 1,
        "other_windows": 0, "other_windows_in_stall": 0}


def test_a_window_counts_until_its_slowest_message_was_answered() -> None:
    # Window 2 is sent in [10.2, 10.3) and its slowest message took 120 ms:
    # it was in flight until 10.42, so a stall from 10.35 held it up. Window 4
    # (sent from 10.4, its messages 5 ms) overlaps the same stall; window 6
    # begins after it and its catch-up ended (10.35 + 2 * 0.1 = 10.55 < 10.6).
    got = overlapping([(10.35, 100.0)], 10.0, 0.1, [2, 4, 6], [120.0, 5.0, 5.0], [2])

    assert got == {"lump_windows": 1, "lump_windows_in_stall": 1,
                   "other_windows": 2, "other_windows_in_stall": 1}


def test_no_stall_no_overlap() -> None:
    got = overlapping([], 0.0, 0.1, [0, 1], [50.0, 5.0], [0])

    assert got["lump_windows"] == 1 and got["lump_windows_in_stall"] == 0
    assert got["other_windows_in_stall"] == 0


def test_the_probe_flushes_until_stopped_and_leaves_no_file(tmp_path: Path) -> None:
    async def probe() -> list[tuple[float, float]]:
        disk = DiskProbe(tmp_path)
        await disk.start()
        await asyncio.sleep(1.0)
        return await disk.stop()

    flushes = asyncio.run(probe())

    # Every 10 ms for 1 s, less the interpreter's start (long on a busy machine).
    assert 1 <= len(flushes) <= 101
    assert all(ms >= 0 for _, ms in flushes)
    assert [t for t, _ in flushes] == sorted(t for t, _ in flushes)
    assert list(tmp_path.iterdir()) == []


def test_same_device(tmp_path: Path) -> None:
    assert same_device(tmp_path, tmp_path.parent) is True
    assert same_device(tmp_path, Path("/proc")) is False
    assert same_device(tmp_path, tmp_path / "missing") is None
