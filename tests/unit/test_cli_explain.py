"""`dispatch explain` rendering: the server's trace JSON told as a story, with ms timings."""

from __future__ import annotations

import copy
import io
from typing import Any

from rich.console import Console

from callboard.cli import explain

T0 = 1_700_000_000_000

ASSIGNED: dict[str, Any] = {
    "id": "AD_1", "agent_name": "a", "room": "r1", "room_sid": "RM_1", "developer": "",
    "api_key": "devkey", "source": "api", "metadata": "", "created_at_ms": T0, "deleted": False,
    "jobs": [{"job_id": "AJ_1", "attempt": 1, "state": "running", "worker_id": "AW_B",
              "error": "", "participant_identity": "agent-AJ_1"}],
    "trace": [
        {"at_ms": T0, "what": "created", "detail": {"source": "api", "agent_name": "a",
                                                    "owner": "", "room": "r1",
                                                    "job_type": "room"}},
        {"at_ms": T0, "what": "candidates", "detail": {"job": "AJ_1", "workers": [
            {"worker_id": "AW_A", "load": 0.0, "status": "available", "remote": "10.0.0.1:5",
             "tried": False},
            {"worker_id": "AW_B", "load": 0.30000001, "status": "available",
             "remote": "10.0.0.2:6", "tried": False}]}},
        {"at_ms": T0 + 1, "what": "offered", "detail": {"job": "AJ_1", "worker": "AW_A",
                                                        "load": 0.0}},
        {"at_ms": T0 + 4, "what": "declined", "detail": {"job": "AJ_1", "worker": "AW_A"}},
        {"at_ms": T0 + 4, "what": "candidates", "detail": {"job": "AJ_1", "workers": [
            {"worker_id": "AW_A", "load": 0.0, "status": "available", "remote": "10.0.0.1:5",
             "tried": True},
            {"worker_id": "AW_B", "load": 0.3, "status": "available", "remote": "10.0.0.2:6",
             "tried": False}]}},
        {"at_ms": T0 + 5, "what": "offered", "detail": {"job": "AJ_1", "worker": "AW_B",
                                                        "load": 0.3}},
        {"at_ms": T0 + 9, "what": "assigned", "detail": {"job": "AJ_1", "worker": "AW_B",
                                                         "identity": "agent-AJ_1",
                                                         "elapsed_ms": 9}},
        {"at_ms": T0 + 12, "what": "running", "detail": {"job": "AJ_1", "worker": "AW_B"}},
    ],
}

WHY = "no worker registered for agent 'nobody' with production credentials in project P_1"
WAITING: dict[str, Any] = {
    **ASSIGNED, "id": "AD_2", "agent_name": "nobody",
    "jobs": [{"job_id": "AJ_2", "attempt": 1, "state": "pending", "worker_id": "", "error": ""}],
    "trace": [
        {"at_ms": T0, "what": "created", "detail": {"source": "room", "agent_name": "nobody",
                                                    "owner": "", "room": "r1",
                                                    "job_type": "room"}},
        {"at_ms": T0, "what": "candidates", "detail": {"job": "AJ_2", "workers": [], "why": WHY,
                                                       "not_matching": {"other_agent_name": 2}}},
        {"at_ms": T0, "what": "queued", "detail": {"job": "AJ_2", "why": WHY}},
    ],
}


def printed(d: dict[str, Any]) -> str:
    out = io.StringIO()
    con = Console(file=out, width=300, no_color=True)
    for part in explain.render(d):
        con.print(part)
    return out.getvalue()


def test_an_assigned_dispatch_tells_who_was_asked_and_who_took_it() -> None:
    text = printed(ASSIGNED)
    assert "dispatch AD_1: agent 'a' in room r1" in text
    assert "made by api with production credentials (key devkey)" in text
    assert "AW_A  load 0.00  available  10.0.0.1:5" in text
    assert "AW_B  load 0.30  available  10.0.0.2:6" in text
    assert "AW_A  load 0.00  available, already tried  10.0.0.1:5" in text
    assert "job AJ_1 offered to worker AW_A (load 0.00)" in text
    assert "worker AW_A declined" in text
    assert "worker AW_B took job AJ_1 as agent-AJ_1, 9 ms after the dispatch was created" in text
    assert text.rstrip().endswith(
        "outcome: running on worker AW_B as agent-AJ_1 (assigned 9 ms after creation)")


def test_timings_are_ms_since_creation() -> None:
    rows = [line.split("│") for line in printed(ASSIGNED).splitlines() if "│" in line]
    steps = [(r[1].strip(), r[2].strip()) for r in rows if len(r) > 3 and r[2].strip()]
    assert steps == [("0", "created"), ("0", "candidates"), ("1", "offered"), ("4", "declined"),
                     ("4", "candidates"), ("5", "offered"), ("9", "assigned"), ("12", "running")]


def test_a_waiting_dispatch_says_why() -> None:
    text = printed(WAITING)
    assert "job AJ_2: 0 matching workers" in text
    assert "other workers of the project: 2 other agent name" in text
    assert f"nobody can take it: {WHY}" in text
    assert f"outcome: waiting for a worker: {WHY}" in text


def with_job(state: str, **job: Any) -> dict[str, Any]:
    d = copy.deepcopy(ASSIGNED)
    d["jobs"][0].update(state=state, **job)
    return d


def test_outcomes() -> None:
    assert explain.outcome(with_job("offered")) == (
        "offered to worker AW_B; waiting for its answer")
    assert explain.outcome(with_job("assigned")) == (
        "assigned to worker AW_B as agent-AJ_1; it has not reported running yet")
    assert "the job waits for it to come back" in explain.outcome(with_job("orphaned"))
    assert explain.outcome(with_job("success")) == (
        "done: the job ended successfully on worker AW_B")
    assert explain.outcome(with_job("failed", error="boom")) == "failed: boom"
    assert explain.outcome(with_job("expired", error="no worker took the job in 600 s")) == (
        "expired: no worker took the job in 600 s")


def test_a_redispatched_job_counts_its_attempts() -> None:
    d = with_job("failed", error="worker AW_B did not come back within 10 s")
    d["jobs"].append({"job_id": "AJ_3", "attempt": 2, "state": "running", "worker_id": "AW_C",
                      "participant_identity": "agent-AJ_3"})
    assert explain.outcome(d).startswith("running on worker AW_C as agent-AJ_3")
    assert explain.outcome(d).endswith("(attempt 2; 1 earlier)")


def test_a_dispatch_deleted_before_any_job() -> None:
    d = {**WAITING, "jobs": [], "deleted": True, "trace": [
        *WAITING["trace"][:1],
        {"at_ms": T0 + 50, "what": "deleted", "detail": {"reason": "dispatch deleted: by API"}}]}
    assert explain.outcome(d) == "deleted before any job: dispatch deleted: by API"
    assert "this dispatch has been deleted" in printed(d)


def test_a_participant_dispatch_waits_for_a_participant() -> None:
    d = {**WAITING, "jobs": [], "trace": [
        {"at_ms": T0, "what": "created", "detail": {"job_type": "participant"}}]}
    assert explain.outcome(d) == (
        "no job yet: a participant dispatch gets a job when a participant joins the room")


def test_every_trace_kind_has_words() -> None:
    entries = {
        "timeout": {"worker": "W", "after_ms": 1500},
        "worker_gone": {"worker": "W", "reason": "connection closed"},
        "terminate": {"worker": "W", "job": "J"},
        "orphaned": {"worker": "W", "job": "J", "reason": "closed", "grace_ms": 10000},
        "migrated": {"job": "J", "from_worker": "W1", "worker": "W2"},
        "redispatched": {"from_job": "J1", "job": "J2", "attempt": 2},
        "restored": {"job": "J", "state_before": "running"},
        "ended": {"job": "J", "state": "failed", "error": "boom"},
        "retry": {"job": "J", "worker": "W", "declines": 2},
    }
    words = {what: explain.describe({"what": what, "detail": d}) for what, d in entries.items()}
    assert words == {
        "timeout": "worker W did not answer in time (1500 ms)",
        "worker_gone": "worker W disconnected before answering: connection closed",
        "terminate": "worker W answered terminate=true: job J is not run at all",
        "orphaned": "worker W left (closed); job J waits 10 s for it to come back",
        "migrated": "job J moved from worker W1 to worker W2",
        "redispatched": "J1 is dispatched again as job J2 (attempt 2)",
        "restored": "server restarted; job J was running",
        "ended": "job J ended failed: boom",
        "retry": "worker W declined job J before and reports itself available: asked again "
                 "(2 declines so far)",
    }


def test_an_unknown_trace_kind_shows_its_detail() -> None:
    assert explain.describe({"what": "teleported", "detail": {"to": "mars", "n": 2}}) == (
        "to=mars, n=2")


def test_a_big_pool_is_summarised() -> None:
    d = copy.deepcopy(WAITING)
    d["trace"][1]["detail"]["workers"] = [
        {"worker_id": f"AW_{i}", "load": 1.0, "status": "full", "remote": "", "tried": False}
        for i in range(20)]
    d["trace"][1]["detail"]["more"] = 5
    text = explain.describe(d["trace"][1])
    assert text.startswith("job AJ_2: 25 matching workers") and "… and 5 more" in text
