"""Smoke test of the load generator: a few devices for a few seconds through a
real node (``python -m gchat serve`` on this test's database).

Only the bookkeeping is checked (every message sent was accepted, delivered
and acknowledged, and the inbox is empty afterwards), never timing: the
figures belong to ``python -m loadtests`` (docs/PERFORMANCE.md), not to CI.
"""

import math

import pytest

from loadtests.scenarios import inbox_left, smoke_relay

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


async def test_relay_smoke_fixed_rate_through_the_node_and_the_raw_relay(
        database_url: str) -> None:
    """The open loop (``ab --rate``, the 10/50/90% phases) on the lean
    connections (``loadtests.wire``): every message sent at the rate comes
    back through either server, G-Chat's envelopes open, each has a latency."""
    from loadtests.scenarios import Run

    run = Run(short=True, workers_count=1, database_url=database_url, log=lambda _: None,
              overrides={"pairs": 4, "rate_s": 2.5, "warmup_s": 0.5})
    try:
        await run.setup(8)
        for target in ("gchat", "raw"):
            got = await run.relay_phase(target, "rate", 80.0, label=f"smoke-{target}")

            assert got["rejected"] == {} and got["outstanding_at_end"] == 0
            # 80/s for 2.5 s, round-robin from the phase's start: 200 sends.
            assert 190 <= got["sent"] <= 201
            assert got["sent"] == got["accepted"] == got["delivered"] == got["acked"]
            # Latency samples are the sends intended after the warm-up.
            assert 150 <= got["samples"] <= got["sent"]
            # ... each in its 100 ms window of send time, 2 s of them.
            assert got["lumps"]["windows"] == 20 == len(got["lumps"]["window_max_ms"])
            assert max(got["lumps"]["window_max_ms"]) == round(got["max_ms"], 1)
            assert got["lumps"]["generator_late_max_ms"] >= 0
            assert got["lumps"]["pg_checkpoints"] >= 0
            assert 0 <= got["cpu"]["db_backends_opened"] <= got["cpu"]["db_backends"]
            # The disk probe flushed beside the phase, every 10 ms for its 2 s
            # (fewer when a flush or a busy machine holds it), and placed each window.
            disk = got["disk_flushes"]
            assert 50 <= disk["flushes"] <= 201
            assert 0 <= disk["p50_ms"] <= disk["p99_ms"] <= disk["max_ms"]
            assert disk["lump_windows"] + disk["other_windows"] == 20
            # The node's own lag samples over the measured window, from its /metrics.
            late = got["lumps"]["node_loop_late"]
            if target == "gchat":
                assert late["count"] >= 20  # 2 s at one sample per 0.05 s, give or take
                assert late["count"] >= late["0.025"] >= late["0.05"] >= late["0.1"] >= 0
            else:
                assert late is None
            if target == "gchat":
                assert got["verified_decryptions"] >= 1 and got["bad_plaintext"] == 0
        assert await inbox_left(database_url, [d.device_id for d in run.devs]) == 0
    finally:
        await run.teardown()


async def test_relay_smoke_backs_off_when_the_node_rate_limits(database_url: str) -> None:
    """A sender refused with ``rate_limited`` waits the ``retry_after`` it was
    given and carries on: nothing is left outstanding, every accepted message
    is delivered, and the refusals are counted, not lost."""
    from loadtests.scenarios import Run

    limits = "messages=10/20,frames=1000000/1000000"
    run = Run(short=True, workers_count=1, database_url=database_url, log=lambda _: None,
              overrides={"pairs": 2, "capacity_s": 2.0, "warmup_s": 0.5},
              node_env={"GCHAT_RATE_LIMITS": limits})
    try:
        await run.setup(4, raw_relay=False)
        got = await run.relay_phase("gchat", "closed", label="smoke-limited")
    finally:
        await run.teardown()

    assert set(got["rejected"]) == {"rate_limited"}
    assert got["outstanding_at_end"] == 0
    assert got["sent"] == got["accepted"] + got["rejected"]["rate_limited"]
    assert got["accepted"] == got["delivered"] == got["acked"]
    # At most the burst and 20/s per sender were accepted, and the senders kept
    # sending after their first refusal: more than the burst of 10 each.
    assert 2 * 10 < got["accepted"] <= 2 * (10 + 20 * 2.0) + 2


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
    # The bare handler may move 2 MiB in less than one 10 ms clock tick of /proc's
    # CPU count (it read 0.0 in three runs on a quick machine), so only its sign
    # is checked here; the full-size files scenario compares it with the node's.
    assert summary["bare_cpu_s_big"] >= 0 and summary["node_idle_cores"] >= 0
    # Three files at once, each verified; the node deleted every fetched blob.
    for side in ("gchat", "raw"):
        assert summary["many"][side]["verified"] == summary["many"][side]["files"] == 3
    assert summary["blobs_left"] == 0


async def test_files_ab_meters_each_leg_of_each_server(database_url: str) -> None:
    """``python -m loadtests.files_ab`` scaled down: one node and the bare
    handler each moved the file up and down (a file that came back
    different raises), and each leg has its figures."""
    from loadtests import harness
    from loadtests.files_ab import run_variants

    sides = await run_variants([("node", harness.REPO)], rounds=1, mib=2, quiet=1.0,
                               database_url=database_url)

    assert [(s.name, s.node) for s in sides] == [("bare", False), ("node", True)]
    for side in sides:
        assert len(side.up) == len(side.down) == 1
        for leg in (*side.up, *side.down):
            assert leg.mib_s > 0 and leg.server_ms >= 0 and len(leg.split) == 4


async def test_scale_scenario_smoke_counts_add_up(empty_database_url: str) -> None:
    """``python -m loadtests.scale`` scaled down: the import, search, export, audit log
    and relay it measures happened as counted (the figures are in PERFORMANCE.md)."""
    from loadtests import scale
    from loadtests.scale import BROAD

    result = await scale.run(officials=300, measured=300, events=3000, relay_seconds=2.0,
                             pairs=2, rounds=len(BROAD), log=lambda _: None,
                             database_url=empty_database_url, audit_rounds=2, relay_rounds=2)

    assert result["import_base"] is None and result["import_measured"]["seconds"] > 0
    assert result["import_measured"]["node_rss_peak_mib"] >= result["node_rss_start_mib"] > 0
    # Every imported official, the superadmin and the searcher are in the export.
    assert result["export"]["rows"] == 300 + 2
    assert result["export"]["cli_cpu_s"] > 0 and result["export"]["node_cpu_s"] >= 0
    assert result["search"]["narrow"]["results_per_page"] >= 1
    broad = result["search"]["broad"]["page_of"]
    assert set(broad) == set(scale.BROAD)
    assert broad["สม"] == broad["som"] == 20
    assert result["auditor_last_day"]["rows_last"] >= 1
    assert len(result["auditor_last_day"]["rounds"]) == 2
    assert result["auditor_last_day"]["query_cpu_ms_p50"] > 0
    assert result["audit_log"]["events"] >= 3000 and result["audit_log"]["bytes_per_event"] > 0
    assert result["inclusion_proof"]["leaves"] == result["audit_log"]["events"]
    relay = result["relay"]
    assert [p["statistics"] for p in relay["phases"]] == ["fresh database", "analysed"] * 2
    for phase in relay["phases"]:
        assert phase["rejected"] == {} and phase["outstanding_at_end"] == 0
        assert phase["sent"] == phase["accepted"] == phase["delivered"] > 0
        # Each fresh-statistics phase, the second after an ANALYZE too, plans
        # as the database did before the directory was filled.
        if phase["statistics"] == "analysed":
            assert phase["officials_planned"] >= 300
        else:
            assert phase["officials_planned"] < 300
    # Every ack was stored (the last may reach the node after the clients
    # closed), and each message left an accepted and a delivered event.
    assert math.isfinite(relay["inbox_emptied_after_s"])
    assert relay["audit_events"] >= 2 * relay["messages"]
    assert relay["audit_bytes_per_message"] > 0 and relay["stale_over_analysed"] > 0


async def test_backlog_smoke_acks_in_batches_past_a_smaller_window(database_url: str) -> None:
    """The load generator's drain acks many envelopes per frame; a node window
    smaller than its ack batch does not stall it (it acks what it has read
    before it waits for more), and every envelope is deleted."""
    from loadtests.scenarios import smoke_backlog

    got = await smoke_backlog(database_url, backlog=300, ack_batch=64, window=8,
                              log=lambda _: None)

    assert got["failed_devices"] == 0, got["errors"]
    assert got["received"] == 300
    assert got["left_in_inbox"] == 0
    # At most a window's worth is unacked at a time: at least 300 / 8 frames,
    # each holding what one read brought; far fewer than one per envelope.
    assert 300 / 8 <= got["ack_frames"] < 300
