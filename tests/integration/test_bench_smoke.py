"""`bench/dispatch.py --quick --json` runs to the end and reports every figure.

No timing assertions here: timings belong to the benchmark, and this machine is shared. What is
asserted is that each measurement happened, and that the crash check found every record.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 170  # --quick stays under a minute on a quiet machine; a busy CI machine gets slack


@pytest.fixture(scope="module")
def quick() -> dict[str, Any]:
    """One quick run shared by the tests of this module."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dispatch.py"), "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, f"benchmark failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_benchmark_reports_every_figure(quick: dict[str, Any]) -> None:
    result = quick
    assert result["config"]["quick"] is True
    for side in ("floor", "callboard"):
        figures = result[side]
        latency, throughput, memory = figures["latency"], figures["throughput"], figures["memory"]
        assert latency["count"] == result["config"]["latency_count"]
        assert _positive(latency["p50_ms"]) and latency["p99_ms"] >= latency["p50_ms"]
        assert throughput["dispatches"] > 0 and _positive(throughput["per_s"])
        assert throughput["workers"] == result["config"]["workers"]
        assert throughput["callers"] == result["config"]["callers"]
        assert _positive(memory["rss_0_kib"]) and _positive(memory["rss_n_kib"])
        assert isinstance(memory["kib_per_worker"], float)
    assert result["floor"]["durability"] is None  # the floor has no store
    if len(os.sched_getaffinity(0)) >= 2:  # the callers and workers kept off the event loop's core
        assert result["placement"].startswith("each server's main process on CPU ")


def test_quick_benchmark_finds_every_record_after_the_crash(quick: dict[str, Any]) -> None:
    durability = quick["callboard"]["durability"]
    assert durability["acknowledged_dispatches"] > 0
    assert durability["missing_dispatches"] == 0
    assert durability["missing_jobs"] == 0
    assert durability["dispatch_rows"] == durability["acknowledged_dispatches"]
    assert durability["job_rows"] == durability["dispatch_rows"]
    assert durability["ok"] is True
