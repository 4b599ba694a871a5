"""CI smoke of the two robustness benchmarks at a tiny size (the full runs are long and run outside CI):
bench.chaos with one run, ~100 documents and one SIGKILL on a stack of its own; bench.fuzz with a few
hundred bad events on the local stack under an isolated namespace."""

from __future__ import annotations

import pytest

from bench import chaos, fuzz

pytestmark = pytest.mark.integration

CHAOS_KEYS = {
    "runs",
    "runs_exact",
    "chunks_expected",
    "chunks_lost",
    "chunks_duplicated",
    "stale_versions",
    "acl_mismatches",
    "recovery_s_p95",
}
FUZZ_KEYS = {
    "bad_sent",
    "dead_lettered",
    "dead_letters_with_reason",
    "worker_crashes",
    "stuck_partitions",
    "good_sent",
    "good_indexed",
}


def test_chaos_one_run_with_a_kill_converges_exactly() -> None:
    # torch-fp32: the deployed `auto` probes the backends at every embedder start (a minute on 2 vCPUs).
    argv = ["--runs", "1", "--documents", "100", "--kill", "chunker", "--restart", ""]
    result = chaos.main([*argv, "--embedding-backend", "torch-fp32", "--timeout-s", "240"])
    assert set(result) == CHAOS_KEYS
    assert result["runs"] == result["runs_exact"] == 1, result
    assert result["chunks_expected"] > 0
    bad = ("chunks_lost", "chunks_duplicated", "stale_versions", "acl_mismatches")
    assert {k: result[k] for k in bad} == dict.fromkeys(bad, 0)
    assert result["recovery_s_p95"] is not None and result["recovery_s_p95"] > 0


def test_fuzz_bad_events_are_dead_lettered_and_good_ones_indexed() -> None:
    result = fuzz.main(["--events", "300", "--good", "30", "--odd", "12"])
    assert set(result) == FUZZ_KEYS
    assert result["bad_sent"] > 250
    assert result["dead_lettered"] == result["dead_letters_with_reason"] == result["bad_sent"], result
    assert result["worker_crashes"] == 0 and result["stuck_partitions"] == 0, result
    assert result["good_sent"] > 0 and result["good_indexed"] == result["good_sent"], result
