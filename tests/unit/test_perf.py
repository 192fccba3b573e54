"""The load test's report: percentiles, counts and jobs per worker, from per-room results."""

from __future__ import annotations

import pytest

from callboard.cli.agents import Answer
from callboard.cli.perf import LoadPlan, RoomResult, percentile, show, summary


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 99) == 7
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99,
                                                                                          100)
    assert percentile([30, 10, 20], 50) == 20


def room(name: str, worker: str | None, join_ms: int | None, error: str = "") -> RoomResult:
    answer = Answer(worker, "a", "", "1.2.3.4:5", "AJ", "AD", "agent") if worker else None
    return RoomResult(name, joined=join_ms is not None, listed=join_ms is not None,
                      answered=worker is not None and not error, join_ms=join_ms,
                      answer=answer, error=error)


def test_summary_counts_and_groups_by_worker() -> None:
    results = [room("r0", "AW_1", 100), room("r1", "AW_2", 300), room("r2", "AW_1", 200),
               room("r3", None, None, "no agent joined within 5 s")]
    report = summary(LoadPlan(4, "a", 1.0, 5.0, "r"), results, 2.5)
    assert (report["joined"], report["answered"], report["failed"]) == (3, 3, 1)
    assert report["join_latency_ms"] == {"p50": 200, "p99": 300, "max": 300}
    assert report["by_worker"] == {"AW_1": {"jobs": 2, "developer": "", "address": "1.2.3.4:5"},
                                   "AW_2": {"jobs": 1, "developer": "", "address": "1.2.3.4:5"}}
    assert [r["ok"] for r in report["results"]] == [True, True, True, False]


def test_show_lists_where_each_job_went(capsys: pytest.CaptureFixture[str]) -> None:
    results = [room("r0", "AW_1", 100), room("r1", None, None, "no agent joined within 5 s")]
    show(summary(LoadPlan(2, "a", 1.0, 5.0, "r"), results, 2.5))
    out = capsys.readouterr().out
    assert "a: 2 rooms, 1 joined, 1 answered, 1 failed (2.5 s)" in out
    assert "join latency: p50 100 ms, p99 100 ms, max 100 ms" in out
    row = next(line for line in out.splitlines() if "r0" in line and "AW_1" in line)
    assert "AJ" in row and "100 ms" in row and "ok" in row
    assert "no agent joined within 5 s" in out
