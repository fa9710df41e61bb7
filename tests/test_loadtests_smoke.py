"""Smoke test of the load generator: a few devices for a few seconds through a
real node (``python -m gchat serve`` on this test's database).

Only the bookkeeping is checked (every message sent was accepted, delivered
and acknowledged, and the inbox is empty afterwards), never timing: the
figures belong to ``python -m loadtests`` (docs/PERFORMANCE.md), not to CI.
"""

import pytest

from loadtests.scenarios import smoke_relay

pytestmark = pytest.mark.slow  # seconds of load by design


async def test_relay_smoke_counts_add_up(database_url: str) -> None:
    summary = await smoke_relay(database_url, pairs=4, seconds=3.0, log=lambda _: None)

    assert summary["pairs"] == 4
    assert summary["sent"] > 0
    assert summary["rejected"] == {}
    assert summary["outstanding_at_end"] == 0
    assert summary["sent"] == summary["accepted"] == summary["delivered"] == summary["acked"]
    assert summary["verified_decryptions"] >= 1 and summary["bad_plaintext"] == 0
    assert summary["left_in_inbox"] == 0
    # The meter found the node's PostgreSQL backends and what they spent.
    assert summary["cpu"]["db_backends"] >= 1
    assert summary["cpu"]["db_backends_cpu_s"] > 0 and summary["db_ms_per_msg"] > 0
    # Every accepted and delivered message's audit events reached the Merkle log.
    assert summary["audit"]["samples"] >= 1
    assert 0 <= summary["audit"]["drained_after_s"] < 60


async def test_files_smoke_every_file_comes_back_whole(database_url: str) -> None:
    from loadtests.scenarios import smoke_files

    summary = await smoke_files(database_url, log=lambda _: None)

    # The big file went through the node and the bare handler, and came back whole.
    assert summary["verified_big"]
    assert len(summary["rounds"]["gchat"]) == len(summary["rounds"]["raw"]) == 1
    for side in ("gchat", "raw"):
        for leg in ("upload", "download"):
            assert summary["best_mib_s"][side][leg] > 0
    # The node's memory was read from /proc while it worked.
    assert summary["node_rss_samples"] >= 1 and summary["node_cpu_s_big"] > 0
    assert summary["bare_cpu_s_big"] > 0 and summary["node_idle_cores"] >= 0
    # Three files at once, each verified; the node deleted every fetched blob.
    for side in ("gchat", "raw"):
        assert summary["many"][side]["verified"] == summary["many"][side]["files"] == 3
    assert summary["blobs_left"] == 0
