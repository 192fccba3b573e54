"""What `callboard call --json` reports, and how long a call lingers."""

from __future__ import annotations

from pathlib import Path

from callboard.cli.agents import Answer
from callboard.cli.call import Reply, Report, _default_linger_s


def test_report_json() -> None:
    report = Report("call-1", "caller-1", "echo-agent-jack")
    report.answer = Answer("AW_1", "echo-agent-jack", "", "127.0.0.1:5", "AJ_1", "AD_1", "agent")
    report.timings_ms = {"connect": 80, "agent_joined": 400, "reply": 30, "total": 600}
    report.replies.append(Reply("agent", "lk.transcription", "echo: hi", 450))
    ok = report.as_json(True)
    assert ok["ok"] is True and "error" not in ok and "recorded_s" not in ok
    assert ok["answered_by"]["worker_id"] == "AW_1"
    assert ok["replies"] == [{"sender": "agent", "topic": "lk.transcription", "text": "echo: hi",
                              "after_ms": 450}]
    failed = Report("call-2", "c", "nobody").as_json(False, "no agent", {"id": "AD_2"})
    assert failed["answered_by"] is None
    assert (failed["error"], failed["explain"]) == ("no agent", {"id": "AD_2"})


def test_linger_defaults() -> None:
    assert _default_linger_s(Path("x.wav"), "hi", None) == 2.0
    assert _default_linger_s(None, "hi", None) == 0.0
    assert _default_linger_s(None, None, Path("say.wav")) == 0.0
