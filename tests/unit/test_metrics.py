"""The dispatch metrics listener and the per-project view of the registry."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from callboard.dispatch.model import JobRecord, JobState, RecordEvent, SaveJob
from callboard.server.metrics import DispatchMetrics, _OnlyProject


def fake_hub() -> Any:
    names = {"P_a": "alpha", "P_b": "beta"}
    store = SimpleNamespace(get_project=lambda pid: SimpleNamespace(name=names[pid]))
    return SimpleNamespace(store=store)


def event(kind: str, project: str, dispatch_id: str, at_ms: int) -> RecordEvent:
    return RecordEvent(project_id=project, kind=kind, at_ms=at_ms, message="",
                       dispatch_id=dispatch_id)


def ended(project: str, state: JobState) -> SaveJob:
    return SaveJob(JobRecord(job_id="AJ_1", dispatch_id="AD_1", project_id=project, owner="",
                             room_name="r", agent_name="a", attempt=1, state=state, worker_id="",
                             error="", created_at_ms=0, updated_at_ms=0))


def value(text: str, prefix: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(prefix)]
    return float(line.rsplit(" ", 1)[1])


def test_latency_counts_and_ends_per_project() -> None:
    registry = CollectorRegistry()
    m = DispatchMetrics(fake_hub(), registry)
    m([event("dispatch.created", "P_a", "AD_1", 1000), event("dispatch.created", "P_b", "AD_2",
                                                             1000)])
    m([event("dispatch.assigned", "P_a", "AD_1", 1040), ended("P_a", JobState.SUCCESS),
       ended("P_a", JobState.RUNNING)])
    m([event("dispatch.assigned", "P_a", "AD_1", 9000)])  # a re-dispatch: counted once
    m([event("dispatch.deleted", "P_b", "AD_2", 2000), event("dispatch.assigned", "P_b", "AD_2",
                                                             3000)])
    text = generate_latest(registry).decode()
    assert value(text, 'callboard_dispatches_created_total{project="alpha"}') == 1
    assert value(text, 'callboard_dispatch_latency_seconds_count{project="alpha"}') == 1
    assert value(text, 'callboard_dispatch_latency_seconds_sum{project="alpha"}') == 0.04
    assert value(text, 'callboard_dispatch_latency_seconds_bucket{le="0.05",project="alpha"}') == 1
    assert 'callboard_dispatch_latency_seconds_count{project="beta"}' not in text
    assert value(text, 'callboard_jobs_ended_total{project="alpha",state="success"}') == 1


def test_a_project_sees_only_its_own_series() -> None:
    registry = CollectorRegistry()
    m = DispatchMetrics(fake_hub(), registry)
    m([event("dispatch.created", "P_a", "AD_1", 0), event("dispatch.created", "P_b", "AD_2", 0)])
    text = generate_latest(_OnlyProject(registry, "beta")).decode()
    assert 'project="beta"' in text and 'project="alpha"' not in text
