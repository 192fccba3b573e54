"""`bench/audio.py --quick --json` runs to the end, inside the test namespace, and reports every
figure. No timing assertions (the machine is shared): only that each measurement happened and
that the relay lost nothing at the quick run's light load."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.rtc import needs_netns

pytestmark = needs_netns
ROOT = Path(__file__).resolve().parents[2]


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_audio_benchmark_reports_every_figure() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "audio.py"), "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    for name in ("direct_p50_ms", "relayed_p50_ms", "passthrough_server_cpu_ms_per_stream_s",
                 "transcode_codec_cpu_ms_per_stream_s", "transcode_over_passthrough"):  # fmt: skip
        assert _positive(result[name]), name
    assert [s["rooms"] for s in result["steps"]] == [1, 3]
    assert all(s["loss_pct"] <= 1.0 for s in result["steps"])
