"""The dispatcher driven by events on a fake clock: no sockets, no sleeps, no asyncio."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callboard.dispatch.core import REOFFER_FIRST_MS, Dispatcher
from callboard.dispatch.ledger import COMPACT_SLACK, Timers
from callboard.dispatch.model import (
    Action,
    AvailabilityAnswered,
    CloseWorker,
    DispatchCreated,
    DispatchDeleted,
    DispatchRecord,
    DispatchSpec,
    Event,
    JobRecord,
    JobsMigrated,
    JobState,
    JobStatusReported,
    JobType,
    ParticipantJoined,
    ParticipantRef,
    RecordEvent,
    ReportedJobStatus,
    Restored,
    RoomClosed,
    RoomRef,
    SaveDispatch,
    SaveJob,
    SendAssignment,
    SendAvailabilityRequest,
    SendTermination,
    Tick,
    WorkerGone,
    WorkerInfo,
    WorkerRegistered,
    WorkerStatus,
    WorkerStatusChanged,
    trace_line,
)
from callboard.dispatch.selection import choose

PROJECT = "P_one"
T0 = 1_000_000
A = TypeVar("A")


# -- helpers ---------------------------------------------------------------------------------------


def worker_info(
    worker_id: str,
    *,
    agent: str = "",
    owner: str = "",
    namespace: str = "",
    job_type: JobType = JobType.ROOM,
    project: str = PROJECT,
    connected_at_ms: int = T0,
) -> WorkerInfo:
    return WorkerInfo(
        worker_id=worker_id,
        project_id=project,
        api_key="APIdev" if owner else "APIprod",
        owner=owner,
        agent_name=agent,
        namespace=namespace,
        job_type=job_type,
        version="1.8.9",
        remote=f"10.0.0.{len(worker_id)}:4000",
        connected_at_ms=connected_at_ms,
    )


def dispatch_spec(
    dispatch_id: str,
    *,
    agent: str = "",
    owner: str = "",
    room: str = "room-1",
    namespace: str = "",
    job_type: JobType = JobType.ROOM,
    project: str = PROJECT,
    created_at_ms: int = 0,
) -> DispatchSpec:
    return DispatchSpec(
        dispatch_id=dispatch_id,
        project_id=project,
        owner=owner,
        api_key="APIprod",
        agent_name=agent,
        room=RoomRef(project, room, f"RM_{room}"),
        metadata=f"meta of {dispatch_id}",
        namespace=namespace,
        job_type=job_type,
        created_at_ms=created_at_ms,
    )


def of(actions: Sequence[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def one(actions: Sequence[Action], kind: type[A]) -> A:
    found = of(actions, kind)
    assert len(found) == 1, f"expected one {kind.__name__}, got {found}"
    return found[0]


def kinds(actions: Sequence[Action]) -> list[str]:
    return [a.kind for a in of(actions, RecordEvent)]


def event_of(actions: Sequence[Action], kind: str) -> RecordEvent:
    found = [e for e in of(actions, RecordEvent) if e.kind == kind]
    assert len(found) == 1, f"expected one {kind} event, got {kinds(actions)}"
    return found[0]


class Rig:
    """A dispatcher, a fake clock, and short verbs for the events a test feeds it."""

    def __init__(self, seed: int = 1, **settings: Any) -> None:
        self.d = Dispatcher(rng=random.Random(seed), **settings)
        self.now = T0

    def feed(self, event: Event) -> list[Action]:
        return self.d.handle(event)

    def later(self, ms: int) -> list[Action]:
        self.now += ms
        return self.feed(Tick(self.now))

    def at(self, now_ms: int) -> list[Action]:
        self.now = now_ms
        return self.feed(Tick(self.now))

    def register(self, worker_id: str, **kw: Any) -> list[Action]:
        info = worker_info(worker_id, connected_at_ms=self.now, **kw)
        return self.feed(WorkerRegistered(info, self.now))

    def status(
        self, worker_id: str, status: WorkerStatus | None, load: float = 0.0
    ) -> list[Action]:
        return self.feed(WorkerStatusChanged(worker_id, status, load, 0, self.now))

    def create(self, dispatch_id: str, **kw: Any) -> list[Action]:
        kw.setdefault("created_at_ms", self.now)
        return self.feed(DispatchCreated(dispatch_spec(dispatch_id, **kw), self.now))

    def answer(
        self,
        worker_id: str,
        job_id: str,
        available: bool = True,
        *,
        terminate: bool = False,
        identity: str = "",
    ) -> list[Action]:
        return self.feed(
            AvailabilityAnswered(
                worker_id=worker_id,
                job_id=job_id,
                available=available,
                terminate=terminate,
                participant_identity=identity,
                participant_name="Agent",
                participant_metadata='{"m": 1}',
                participant_attributes={"lk.agent.name": "x"},
                now_ms=self.now,
            )
        )

    def report(
        self, worker_id: str, job_id: str, status: ReportedJobStatus, error: str = ""
    ) -> list[Action]:
        return self.feed(JobStatusReported(worker_id, job_id, status, error, self.now))

    def gone(self, worker_id: str, reason: str = "connection lost") -> list[Action]:
        return self.feed(WorkerGone(worker_id, reason, self.now))

    def migrate(self, worker_id: str, *job_ids: str) -> list[Action]:
        return self.feed(JobsMigrated(worker_id, tuple(job_ids), self.now))

    def delete(self, dispatch_id: str, reason: str = "by api") -> list[Action]:
        return self.feed(DispatchDeleted(dispatch_id, reason, self.now))

    def join(self, identity: str, room: str = "room-1", project: str = PROJECT) -> list[Action]:
        who = ParticipantRef(f"PA_{identity}", identity, name=identity.title(), kind=0)
        return self.feed(ParticipantJoined(project, room, who, self.now))

    def job_of(self, dispatch_id: str, attempt: int = 1) -> JobRecord:
        return self.d.jobs_of_dispatch(dispatch_id)[attempt - 1]

    def offered(self, actions: Sequence[Action]) -> tuple[str, str]:
        """(worker, job) of the one availability request among the actions."""
        request = one(actions, SendAvailabilityRequest)
        return request.worker_id, request.offer.job_id

    def assign(self, dispatch_id: str, **kw: Any) -> tuple[str, str]:
        """Create a dispatch and let the offered worker accept it; (worker, job)."""
        worker_id, job_id = self.offered(self.create(dispatch_id, **kw))
        self.answer(worker_id, job_id)
        return worker_id, job_id

    def trace(self, dispatch_id: str) -> list[tuple[str, Mapping[str, Any]]]:
        record = self.d.dispatch(dispatch_id)
        assert record is not None
        return [(t.what, t.detail) for t in record.trace]

    def whats(self, dispatch_id: str) -> list[str]:
        return [what for what, _ in self.trace(dispatch_id)]


CHI2_CRITICAL_2DOF_P001 = 13.816


def chi_square(observed: Counter[str], weights: Mapping[str, float]) -> float:
    total, norm = sum(observed.values()), sum(weights.values())
    return sum(
        (observed[k] - total * w / norm) ** 2 / (total * w / norm) for k, w in weights.items()
    )


# -- construction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        "availability_timeout_ms",
        "pending_ttl_ms",
        "redispatch_grace_ms",
        "redispatch_count",
        "start_timeout_ms",
    ],
)
def test_negative_settings_are_refused(setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        kwargs: dict[str, Any] = {setting: -1}
        Dispatcher(**kwargs)


def test_idle_dispatcher_has_no_deadline_and_no_records() -> None:
    d = Dispatcher()
    assert d.next_deadline_ms() is None
    assert d.handle(Tick(T0)) == []
    assert d.workers(PROJECT) == [] and d.dispatches(PROJECT) == []
    assert d.dispatch("AD_x") is None and d.job("AJ_x") is None and d.worker("AW_x") is None
    assert d.jobs_of_dispatch("AD_x") == [] and d.pending_count(PROJECT) == 0


# -- matching --------------------------------------------------------------------------------------

MATCH_CASES = [
    # (worker kwargs, dispatch kwargs, offered?)
    ({}, {}, True),
    ({"agent": "alice-bot"}, {"agent": "alice-bot"}, True),
    ({"agent": "alice-bot"}, {}, False),  # a named worker gets no automatic dispatch
    ({}, {"agent": "alice-bot"}, False),  # an unnamed worker gets no named dispatch
    ({"agent": "bot"}, {"agent": "bot2"}, False),
    ({"namespace": "ns1"}, {"namespace": "ns1"}, True),
    ({"namespace": "ns1"}, {}, False),
    ({}, {"namespace": "ns1"}, False),
    ({"owner": "alice"}, {"owner": "alice"}, True),
    ({"owner": "alice"}, {}, False),  # production never reaches a developer's laptop
    ({}, {"owner": "alice"}, False),  # a developer's call never reaches production
    ({"owner": "bob"}, {"owner": "alice"}, False),  # nor another developer
    ({"project": "P_two"}, {}, False),
    ({"job_type": JobType.PUBLISHER}, {}, False),
]


@pytest.mark.parametrize(("worker_kw", "dispatch_kw", "offered"), MATCH_CASES)
def test_matching_is_exact(
    worker_kw: dict[str, Any], dispatch_kw: dict[str, Any], offered: bool
) -> None:
    rig = Rig()
    rig.register("AW_w", **worker_kw)
    actions = rig.create("AD_1", **dispatch_kw)
    requests = of(actions, SendAvailabilityRequest)
    assert [r.worker_id for r in requests] == (["AW_w"] if offered else [])
    state = rig.job_of("AD_1").state
    assert state is (JobState.OFFERED if offered else JobState.PENDING)


def test_matching_picks_the_right_worker_among_many() -> None:
    rig = Rig()
    rig.register("AW_prod", agent="bot")
    rig.register("AW_alice", agent="bot", owner="alice")
    rig.register("AW_bob", agent="bot", owner="bob")
    rig.register("AW_other", agent="bot", project="P_two")
    for n in range(30):
        assert rig.offered(rig.create(f"AD_a{n}", agent="bot", owner="alice"))[0] == "AW_alice"
        assert rig.offered(rig.create(f"AD_p{n}", agent="bot"))[0] == "AW_prod"


# -- selection -------------------------------------------------------------------------------------


def test_selection_follows_load_weights() -> None:
    rig = Rig(seed=20240601)
    for worker_id, load in (("AW_a", 0.1), ("AW_b", 0.4), ("AW_c", 0.6)):
        rig.register(worker_id)
        rig.status(worker_id, WorkerStatus.AVAILABLE, load)
    counts: Counter[str] = Counter()
    for n in range(3000):
        counts[rig.offered(rig.create(f"AD_{n}"))[0]] += 1
    stat = chi_square(counts, {"AW_a": 0.9, "AW_b": 0.6, "AW_c": 0.4})
    assert stat < CHI2_CRITICAL_2DOF_P001, (counts, stat)


def test_floor_lets_a_saturated_available_worker_be_chosen() -> None:
    rig = Rig(seed=9)
    rig.register("AW_idle")
    rig.register("AW_busy")
    rig.status("AW_busy", WorkerStatus.AVAILABLE, 1.0)
    chosen = Counter(rig.offered(rig.create(f"AD_{n}"))[0] for n in range(2000))
    assert 0 < chosen["AW_busy"] < 100  # about 2000 * 0.01 / 1.01 = 20


def test_a_lone_saturated_worker_still_gets_the_job() -> None:
    rig = Rig()
    rig.register("AW_busy")
    rig.status("AW_busy", WorkerStatus.AVAILABLE, 1.5)
    assert rig.offered(rig.create("AD_1"))[0] == "AW_busy"


def test_full_workers_are_not_candidates() -> None:
    rig = Rig()
    rig.register("AW_full")
    rig.register("AW_free")
    rig.status("AW_full", WorkerStatus.FULL, 0.9)
    for n in range(20):
        assert rig.offered(rig.create(f"AD_{n}"))[0] == "AW_free"


def test_same_seed_same_offers() -> None:
    def run() -> list[str]:
        rig = Rig(seed=77)
        for w in ("AW_a", "AW_b", "AW_c"):
            rig.register(w)
        return [rig.offered(rig.create(f"AD_{n}"))[0] for n in range(50)]

    assert run() == run()


def test_offers_follow_the_exact_scan_through_status_changes_declines_and_departures() -> None:
    """Each offer is what `choose` over the AVAILABLE, untried workers returns for the same seed."""
    rig = Rig(seed=31)
    reference, script = random.Random(31), random.Random(4)
    loads: dict[str, tuple[WorkerStatus, float]] = {}
    for n in range(12):
        rig.register(f"AW_{n:02}")
        loads[f"AW_{n:02}"] = (WorkerStatus.AVAILABLE, 0.0)
    for n in range(300):
        for worker_id in script.sample(sorted(loads), 2):
            status = script.choice((WorkerStatus.AVAILABLE,) * 2 + (WorkerStatus.FULL,))
            load = script.choice((0.0, 0.3, 0.8, 1.0))
            rig.status(worker_id, status, load)
            loads[worker_id] = (status, load)
        if n % 50 == 49:
            gone = script.choice(sorted(loads))
            rig.gone(gone)
            del loads[gone]
        actions, tried = rig.create(f"AD_{n}"), set[str]()
        while requests := of(actions, SendAvailabilityRequest):
            eligible = [
                (w, load)
                for w, (status, load) in loads.items()
                if status is WorkerStatus.AVAILABLE and w not in tried
            ]
            assert requests[0].worker_id == choose(eligible, reference)
            tried.add(requests[0].worker_id)
            actions = rig.answer(requests[0].worker_id, requests[0].offer.job_id, available=False)
        assert rig.job_of(f"AD_{n}").state is JobState.PENDING
        rig.delete(f"AD_{n}")


def test_a_big_pool_never_offers_twice_to_a_worker_that_declined() -> None:
    rig = Rig(seed=8)
    for n in range(200):
        rig.register(f"AW_{n:03}")
        rig.status(f"AW_{n:03}", WorkerStatus.AVAILABLE, (n % 10) / 10)
    actions, tried = rig.create("AD_1"), set[str]()
    while requests := of(actions, SendAvailabilityRequest):
        assert requests[0].worker_id not in tried
        tried.add(requests[0].worker_id)
        actions = rig.answer(requests[0].worker_id, requests[0].offer.job_id, available=False)
    assert len(tried) == 200
    assert "all 200 candidates declined" in event_of(actions, "dispatch.queued").message
    detail = rig.trace("AD_1")[-2][1]
    assert len(detail["workers"]) == 20 and detail["more"] == 180
    assert all(line["tried"] for line in detail["workers"])


def test_the_draw_sees_status_changes_after_it_was_built() -> None:
    rig = Rig(seed=3)
    rig.register("AW_a")
    rig.register("AW_b")
    rig.create("AD_0")  # the pool's draw is built here
    rig.status("AW_a", WorkerStatus.FULL, 1.0)
    assert {rig.offered(rig.create(f"AD_f{n}"))[0] for n in range(20)} == {"AW_b"}
    rig.status("AW_a", WorkerStatus.AVAILABLE, 0.0)
    rig.status("AW_b", WorkerStatus.AVAILABLE, 1.0)
    chosen = Counter(rig.offered(rig.create(f"AD_l{n}"))[0] for n in range(500))
    assert chosen["AW_b"] < 25  # about 500 * 0.01 / 1.01 = 5
    rig.gone("AW_a")
    rig.register("AW_c")
    rig.status("AW_b", WorkerStatus.FULL, 1.0)
    assert {rig.offered(rig.create(f"AD_g{n}"))[0] for n in range(20)} == {"AW_c"}


# -- offering --------------------------------------------------------------------------------------


def test_dispatch_created_saves_records_and_offers() -> None:
    rig = Rig()
    rig.register("AW_a")
    actions = rig.create("AD_1", agent="", room="lobby")
    assert [type(a) for a in actions] == [
        SendAvailabilityRequest,  # frames first: the worker starts while records are handed on
        SaveDispatch,
        SaveJob,
        RecordEvent,
        RecordEvent,
    ]
    assert kinds(actions) == ["dispatch.created", "job.offered"]
    request = one(actions, SendAvailabilityRequest)
    job = rig.job_of("AD_1")
    assert job.job_id.startswith("AJ_") and len(job.job_id) == 15
    assert (job.attempt, job.state, job.worker_id) == (1, JobState.OFFERED, "AW_a")
    assert one(actions, SaveJob).record == job
    assert request.resuming is False
    offer = request.offer
    assert (offer.job_id, offer.dispatch_id, offer.room.name) == (job.job_id, "AD_1", "lobby")
    assert (offer.metadata, offer.attempt, offer.job_type) == ("meta of AD_1", 1, JobType.ROOM)
    assert rig.d.next_deadline_ms() == rig.now + 5000


def test_accept_assigns_with_default_identity() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    actions = rig.answer(worker_id, job_id)
    assignment = one(actions, SendAssignment)
    assert assignment.worker_id == "AW_a"
    assert assignment.participant_identity == f"agent-{job_id}"
    assert assignment.participant_name == "Agent"
    assert assignment.participant_metadata == '{"m": 1}'
    assert assignment.participant_attributes == {"lk.agent.name": "x"}
    assert assignment.offer.job_id == job_id
    job = rig.d.job(job_id)
    assert job is not None and job.state is JobState.ASSIGNED
    assert job.participant_identity == f"agent-{job_id}"
    assert event_of(actions, "dispatch.assigned").worker_id == "AW_a"
    assert rig.d.next_deadline_ms() == rig.now + 60_000  # the start timeout, by default
    view = rig.d.worker("AW_a")
    assert view is not None and view.job_ids == (job_id,)


def test_accept_keeps_the_workers_identity() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    actions = rig.answer(worker_id, job_id, identity="my-agent")
    assert one(actions, SendAssignment).participant_identity == "my-agent"


def test_decline_goes_to_the_next_worker() -> None:
    rig = Rig(seed=4)
    for w in ("AW_a", "AW_b", "AW_c"):
        rig.register(w)
    first, job_id = rig.offered(rig.create("AD_1"))
    second, same_job = rig.offered(rig.answer(first, job_id, available=False))
    assert same_job == job_id and second != first
    third, _ = rig.offered(rig.answer(second, job_id, available=False))
    assert third not in (first, second)
    actions = rig.answer(third, job_id, available=False)
    assert of(actions, SendAvailabilityRequest) == []
    job = rig.d.job(job_id)
    assert job is not None and (job.state, job.worker_id) == (JobState.PENDING, "")
    queued = event_of(actions, "dispatch.queued")
    assert "all 3 candidates declined" in queued.message
    assert rig.d.pending_count(PROJECT) == 1


def test_timeout_goes_to_the_next_worker() -> None:
    rig = Rig(availability_timeout_ms=2000)
    rig.register("AW_a")
    rig.register("AW_b")
    first, job_id = rig.offered(rig.create("AD_1"))
    assert rig.later(1999) == []
    actions = rig.later(1)
    second, same = rig.offered(actions)
    assert same == job_id and second != first
    assert "did not answer in time" in event_of(actions, "job.declined").message
    assert ("timeout", {"job": job_id, "worker": first, "after_ms": 2000}) in rig.trace("AD_1")
    assert rig.d.next_deadline_ms() == rig.now + 2000


def test_late_answer_after_timeout_is_ignored_with_a_warning() -> None:
    rig = Rig(availability_timeout_ms=2000)
    rig.register("AW_a")
    rig.register("AW_b")
    first, job_id = rig.offered(rig.create("AD_1"))
    second, _ = rig.offered(rig.later(2000))
    actions = rig.answer(first, job_id)
    assert of(actions, SendAssignment) == []
    warning = event_of(actions, "protocol.error")
    assert warning.level == "warning" and job_id in warning.message
    job = rig.d.job(job_id)
    assert job is not None and (job.state, job.worker_id) == (JobState.OFFERED, second)


def test_answer_for_unknown_job_is_ignored() -> None:
    rig = Rig()
    rig.register("AW_a")
    assert kinds(rig.answer("AW_a", "AJ_nope")) == ["protocol.error"]
    assert rig.answer("AW_unknown", "AJ_nope") == []


def test_terminate_true_ends_the_job_without_retry() -> None:
    rig = Rig()
    rig.register("AW_a")
    rig.register("AW_b")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    actions = rig.answer(worker_id, job_id, available=False, terminate=True)
    assert of(actions, SendAvailabilityRequest) == []
    job = rig.d.job(job_id)
    assert job is not None and job.state is JobState.TERMINATED
    assert "terminate=true" in job.error
    assert kinds(actions) == ["job.terminated"]
    assert rig.whats("AD_1")[-2:] == ["terminate", "ended"]
    assert rig.d.next_deadline_ms() is None and rig.d.pending_count(PROJECT) == 0


def test_worker_gone_while_offered_tries_the_next() -> None:
    rig = Rig()
    rig.register("AW_a")
    rig.register("AW_b")
    first, job_id = rig.offered(rig.create("AD_1"))
    actions = rig.gone(first)
    second, same = rig.offered(actions)
    assert (same, second) == (job_id, "AW_b" if first == "AW_a" else "AW_a")
    assert kinds(actions)[0] == "worker.disconnected"
    assert "worker_gone" in rig.whats("AD_1")


def test_worker_may_take_several_offers_at_once() -> None:
    rig = Rig()
    rig.register("AW_a")
    offers = [rig.offered(rig.create(f"AD_{n}")) for n in range(3)]
    assert {w for w, _ in offers} == {"AW_a"}


# -- the pending queue -----------------------------------------------------------------------------


def test_dispatch_before_any_worker_waits_then_goes_to_the_first_that_registers() -> None:
    rig = Rig()
    actions = rig.create("AD_1", agent="bot")
    assert of(actions, SendAvailabilityRequest) == []
    queued = event_of(actions, "dispatch.queued")
    assert "no worker registered for agent 'bot' with production credentials" in queued.message
    assert rig.d.pending_count(PROJECT) == 1
    rig.now += 3000
    assert of(rig.register("AW_other", agent="other-bot"), SendAvailabilityRequest) == []
    actions = rig.register("AW_bot", agent="bot")
    assert kinds(actions) == ["worker.connected", "job.offered"]
    assert rig.offered(actions) == ("AW_bot", rig.job_of("AD_1").job_id)
    assert rig.d.pending_count(PROJECT) == 0


def test_queued_jobs_are_served_oldest_first() -> None:
    rig = Rig()
    for n in range(3):
        rig.create(f"AD_{n}")
        rig.now += 10
    actions = rig.register("AW_a")
    dispatched = [r.offer.dispatch_id for r in of(actions, SendAvailabilityRequest)]
    assert dispatched == ["AD_0", "AD_1", "AD_2"]


def test_all_full_queues_then_full_to_available_picks_it_up() -> None:
    rig = Rig()
    rig.register("AW_a")
    rig.register("AW_b")
    rig.status("AW_a", WorkerStatus.FULL, 1.0)
    rig.status("AW_b", WorkerStatus.FULL, 0.95)
    actions = rig.create("AD_1")
    assert "2 matching workers all FULL" in event_of(actions, "dispatch.queued").message
    assert of(rig.status("AW_a", WorkerStatus.FULL, 0.5), SendAvailabilityRequest) == []
    assert of(rig.status("AW_a", None, 0.5), SendAvailabilityRequest) == []
    actions = rig.status("AW_b", WorkerStatus.AVAILABLE, 0.3)
    assert rig.offered(actions)[0] == "AW_b"


def test_status_none_keeps_status_and_overwrites_load() -> None:
    rig = Rig()
    rig.register("AW_a")
    rig.status("AW_a", WorkerStatus.FULL, 0.9)
    rig.status("AW_a", None, 0.2)
    view = rig.d.worker("AW_a")
    assert view is not None and (view.status, view.load) == (WorkerStatus.FULL, 0.2)


def test_a_decliner_is_asked_again_after_going_full_and_back() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    actions = rig.answer(worker_id, job_id, available=False)
    assert "the only candidate declined" in event_of(actions, "dispatch.queued").message
    assert of(rig.status("AW_a", WorkerStatus.AVAILABLE, 0.1), SendAvailabilityRequest) == []
    rig.status("AW_a", WorkerStatus.FULL, 1.0)
    assert rig.offered(rig.status("AW_a", WorkerStatus.AVAILABLE, 0.1)) == ("AW_a", job_id)


def test_a_decliner_reporting_available_is_asked_again_after_a_backoff() -> None:
    """livekit-agents declines above its load threshold without reporting FULL: its next
    AVAILABLE report, once the backoff has passed, gets the job offered again."""
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    rig.answer(worker_id, job_id, available=False)
    rig.now += REOFFER_FIRST_MS - 1
    assert of(rig.status("AW_a", WorkerStatus.AVAILABLE, 0.2), SendAvailabilityRequest) == []
    rig.now += 1
    assert rig.offered(rig.status("AW_a", WorkerStatus.AVAILABLE, 0.2)) == ("AW_a", job_id)
    assert ("retry", {"job": job_id, "worker": "AW_a", "declines": 1}) in rig.trace("AD_1")
    rig.answer("AW_a", job_id)
    assert rig.job_of("AD_1").state is JobState.ASSIGNED


def test_the_backoff_doubles_with_each_decline_up_to_its_cap() -> None:
    rig = Rig(pending_ttl_ms=3_600_000)
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    waits = []
    for _ in range(8):
        rig.answer(worker_id, job_id, available=False)
        waited = 0
        while not of(rig.status("AW_a", WorkerStatus.AVAILABLE, 0.2), SendAvailabilityRequest):
            rig.now += 1000
            waited += 1000
        waits.append(waited)
    assert waits == [2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]


def test_a_full_decliner_is_not_asked_again_until_it_is_available() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    rig.answer(worker_id, job_id, available=False)
    rig.now += 10 * REOFFER_FIRST_MS
    assert of(rig.status("AW_a", WorkerStatus.FULL, 0.9), SendAvailabilityRequest) == []
    assert rig.job_of("AD_1").state is JobState.PENDING


def test_a_new_worker_is_untried() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    rig.answer(worker_id, job_id, available=False)
    assert rig.offered(rig.register("AW_b")) == ("AW_b", job_id)


def test_pending_ttl_expires_the_job() -> None:
    rig = Rig(pending_ttl_ms=60_000)
    rig.create("AD_1", agent="bot")
    assert rig.d.next_deadline_ms() == T0 + 60_000
    assert rig.later(59_999) == []
    actions = rig.later(1)
    job = rig.job_of("AD_1")
    assert job.state is JobState.EXPIRED
    expired = event_of(actions, "dispatch.expired")
    assert expired.level == "warning"
    assert "no worker took the job in 60 s" in expired.message
    assert "no worker registered for agent 'bot'" in job.error
    assert rig.d.pending_count(PROJECT) == 0 and rig.d.next_deadline_ms() is None
    assert of(rig.register("AW_bot", agent="bot"), SendAvailabilityRequest) == []


def test_pending_ttl_counts_from_the_dispatchs_creation() -> None:
    rig = Rig(pending_ttl_ms=60_000, availability_timeout_ms=5000)
    rig.create("AD_1")
    rig.now += 50_000
    worker_id, job_id = rig.offered(rig.register("AW_a"))
    rig.now += 1000
    rig.answer(worker_id, job_id, available=False)
    assert rig.d.next_deadline_ms() == T0 + 60_000
    rig.at(T0 + 60_000)
    assert rig.job_of("AD_1").state is JobState.EXPIRED


def test_a_declined_job_past_its_ttl_expires_at_once() -> None:
    rig = Rig(pending_ttl_ms=10_000, availability_timeout_ms=5000)
    rig.create("AD_1")
    rig.now += 9000
    rig.register("AW_a")
    actions = rig.later(5000)  # the availability timeout, already past the TTL
    assert kinds(actions) == ["job.declined", "dispatch.queued", "dispatch.expired"]
    assert rig.job_of("AD_1").state is JobState.EXPIRED
    assert rig.d.next_deadline_ms() is None


# -- what workers report ---------------------------------------------------------------------------


def test_running_then_success() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.assign("AD_1")
    actions = rig.report(worker_id, job_id, ReportedJobStatus.RUNNING)
    assert kinds(actions) == ["job.running"] and of(actions, SaveJob)
    assert rig.report(worker_id, job_id, ReportedJobStatus.RUNNING) == []
    assert rig.report(worker_id, job_id, ReportedJobStatus.PENDING) == []
    actions = rig.report(worker_id, job_id, ReportedJobStatus.SUCCESS)
    assert kinds(actions) == ["job.success"]
    job = rig.d.job(job_id)
    assert job is not None and (job.state, job.error, job.worker_id) == (
        JobState.SUCCESS,
        "",
        "AW_a",
    )
    view = rig.d.worker("AW_a")
    assert view is not None and view.job_ids == ()
    assert rig.report(worker_id, job_id, ReportedJobStatus.FAILED, "late") == []


def test_failed_keeps_the_error() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.assign("AD_1")
    actions = rig.report(worker_id, job_id, ReportedJobStatus.FAILED, "boom")
    job = rig.d.job(job_id)
    assert job is not None and (job.state, job.error) == (JobState.FAILED, "boom")
    assert event_of(actions, "job.failed").level == "error"
    assert rig.trace("AD_1")[-1] == ("ended", {"job": job_id, "state": "failed", "error": "boom"})


def test_update_from_another_worker_closes_that_worker_only() -> None:
    rig = Rig()
    rig.register("AW_a")
    rig.register("AW_b")
    holder, job_id = rig.assign("AD_1")
    intruder = "AW_b" if holder == "AW_a" else "AW_a"
    before = rig.d.job(job_id)
    actions = rig.report(intruder, job_id, ReportedJobStatus.SUCCESS)
    close = one(actions, CloseWorker)
    assert (close.worker_id, close.close_code) == (intruder, 1008)
    assert job_id in close.reason
    assert of(actions, SaveJob) == [] and of(actions, SaveDispatch) == []
    assert rig.d.job(job_id) == before


def test_update_for_an_unknown_job_closes_the_worker() -> None:
    rig = Rig()
    rig.register("AW_a")
    assert one(rig.report("AW_a", "AJ_nope", ReportedJobStatus.RUNNING), CloseWorker)


def test_update_for_a_job_only_offered_is_a_protocol_error() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    close = one(rig.report(worker_id, job_id, ReportedJobStatus.RUNNING), CloseWorker)
    assert "cannot take 'report_running'" in close.reason
    assert rig.report(worker_id, job_id, ReportedJobStatus.PENDING) == []


def test_update_from_an_unknown_worker_is_ignored() -> None:
    rig = Rig()
    assert rig.report("AW_ghost", "AJ_x", ReportedJobStatus.RUNNING) == []


# -- worker loss, grace, migration, re-dispatch ----------------------------------------------------


def test_worker_gone_orphans_its_jobs() -> None:
    rig = Rig(redispatch_grace_ms=10_000)
    rig.register("AW_a")
    _, job_id = rig.assign("AD_1")
    rig.now += 500
    actions = rig.gone("AW_a", "ping timeout")
    assert kinds(actions) == ["worker.disconnected", "job.orphaned"]
    job = rig.d.job(job_id)
    assert job is not None and (job.state, job.worker_id) == (JobState.ORPHANED, "AW_a")
    assert rig.d.next_deadline_ms() == rig.now + 10_000
    assert rig.d.worker("AW_a") is None and rig.d.workers(PROJECT) == []


def test_migrate_within_grace_keeps_the_same_job_and_attempt() -> None:
    rig = Rig(redispatch_grace_ms=10_000)
    rig.register("AW_a", agent="bot")
    _, job_id = rig.assign("AD_1", agent="bot")
    rig.report("AW_a", job_id, ReportedJobStatus.RUNNING)
    rig.gone("AW_a")
    rig.now += 9_000
    rig.register("AW_a2", agent="bot")
    actions = rig.migrate("AW_a2", job_id)
    assert kinds(actions) == ["job.migrated"]
    assert of(actions, SendTermination) == [] and of(actions, SendAvailabilityRequest) == []
    assert rig.d.jobs_of_dispatch("AD_1") == [rig.d.job(job_id)]
    job = rig.d.job(job_id)
    assert job is not None and (job.state, job.worker_id, job.attempt) == (
        JobState.RUNNING,
        "AW_a2",
        1,
    )
    assert rig.d.next_deadline_ms() is None
    assert ("migrated", {"job": job_id, "from_worker": "AW_a", "worker": "AW_a2"}) in rig.trace(
        "AD_1"
    )
    assert rig.report("AW_a2", job_id, ReportedJobStatus.SUCCESS)
    stray = rig.migrate("AW_a2", job_id)  # finished: a copy still running must stop
    assert of(stray, SendTermination) == [SendTermination("AW_a2", job_id)]


def test_repeated_migrate_of_a_held_job_changes_nothing() -> None:
    rig = Rig()
    rig.register("AW_a")
    _, job_id = rig.assign("AD_1")
    rig.gone("AW_a")
    rig.register("AW_b")
    rig.migrate("AW_b", job_id)
    assert rig.migrate("AW_b", job_id) == []


def test_past_grace_the_job_fails_and_the_dispatch_gets_one_more_attempt() -> None:
    rig = Rig(redispatch_grace_ms=10_000, redispatch_count=1)
    rig.register("AW_a")
    _, first_job = rig.assign("AD_1")
    rig.gone("AW_a")
    rig.register("AW_b")
    actions = rig.later(10_000)
    failed = rig.d.job(first_job)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.error == "worker AW_a did not come back within 10 s"
    second = rig.job_of("AD_1", attempt=2)
    assert second.job_id != first_job and second.attempt == 2
    request = one(actions, SendAvailabilityRequest)
    assert (request.worker_id, request.offer.job_id, request.offer.attempt) == (
        "AW_b",
        second.job_id,
        2,
    )
    assert request.resuming is True
    assert kinds(actions) == ["job.failed", "job.redispatched", "job.offered"]
    assert "redispatched" in rig.whats("AD_1")
    # the second attempt is lost too: no third
    rig.answer("AW_b", second.job_id)
    rig.gone("AW_b")
    actions = rig.later(10_000)
    assert kinds(actions) == ["job.failed"]
    assert len(rig.d.jobs_of_dispatch("AD_1")) == 2
    assert rig.d.next_deadline_ms() is None


def test_a_job_never_reported_running_fails_is_stopped_and_gets_one_more_attempt() -> None:
    # livekit-agents 1.8.9 can accept a job and then lose it in its process pool, silently.
    rig = Rig(start_timeout_ms=30_000, redispatch_count=1)
    rig.register("AW_a")
    _, first_job = rig.assign("AD_1")
    rig.register("AW_b")
    assert rig.later(29_999) == []
    actions = rig.later(1)
    stop = one(actions, SendTermination)
    assert (stop.worker_id, stop.job_id) == ("AW_a", first_job)
    failed = rig.d.job(first_job)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.error == (
        "worker AW_a did not report the job running within 30 s of its assignment"
    )
    assert kinds(actions) == ["job.failed", "job.redispatched", "job.offered"]
    assert event_of(actions, "job.failed").level == "error"
    second = rig.job_of("AD_1", attempt=2)
    assert one(actions, SendAvailabilityRequest).offer.job_id == second.job_id
    assert rig.whats("AD_1")[3:] == ["assigned", "ended", "redispatched", "candidates", "offered"]
    # The old copy starting after all is its worker's last word on it, not a protocol error.
    late = rig.report("AW_a", first_job, ReportedJobStatus.RUNNING)
    assert of(late, CloseWorker) == []
    failed = rig.d.job(first_job)
    assert failed is not None and failed.state is JobState.FAILED
    # The second attempt is silent too: it fails, and there is no third.
    worker_id, _ = rig.offered(actions)
    rig.answer(worker_id, second.job_id)
    actions = rig.later(30_000)
    assert kinds(actions) == ["job.failed"]
    assert len(rig.d.jobs_of_dispatch("AD_1")) == 2
    assert rig.d.next_deadline_ms() is None


@pytest.mark.parametrize(
    "status, state",
    [(ReportedJobStatus.RUNNING, JobState.RUNNING), (ReportedJobStatus.SUCCESS, JobState.SUCCESS)],
)
def test_any_report_on_an_assigned_job_ends_its_start_timeout(
    status: ReportedJobStatus, state: JobState
) -> None:
    rig = Rig(start_timeout_ms=30_000)
    rig.register("AW_a")
    worker_id, job_id = rig.assign("AD_1")
    rig.later(29_000)
    rig.report(worker_id, job_id, status)
    assert rig.d.next_deadline_ms() is None
    assert rig.later(60_000) == []
    job = rig.d.job(job_id)
    assert job is not None and job.state is state


def test_a_start_timeout_of_zero_waits_for_the_worker_forever() -> None:
    rig = Rig(start_timeout_ms=0)
    rig.register("AW_a")
    _, job_id = rig.assign("AD_1")
    assert rig.d.next_deadline_ms() is None
    assert rig.later(86_400_000) == []
    job = rig.d.job(job_id)
    assert job is not None and job.state is JobState.ASSIGNED


def test_redispatch_with_no_worker_left_queues() -> None:
    rig = Rig(redispatch_grace_ms=1000, pending_ttl_ms=5000)
    rig.register("AW_a")
    rig.assign("AD_1")
    rig.gone("AW_a")
    rig.later(1000)
    second = rig.job_of("AD_1", attempt=2)
    assert second.state is JobState.PENDING
    assert rig.d.next_deadline_ms() == rig.now + 5000  # its own TTL, not the dispatch's


def test_no_redispatch_when_count_is_zero() -> None:
    rig = Rig(redispatch_count=0)
    rig.register("AW_a")
    rig.assign("AD_1")
    rig.gone("AW_a")
    rig.register("AW_b")
    actions = rig.later(10_000)
    assert of(actions, SendAvailabilityRequest) == []
    assert len(rig.d.jobs_of_dispatch("AD_1")) == 1


def test_migrating_an_unknown_job_stops_the_stray_copy() -> None:
    rig = Rig()
    rig.register("AW_a")
    actions = rig.migrate("AW_a", "AJ_unknown")
    assert of(actions, SendTermination) == [SendTermination("AW_a", "AJ_unknown")]
    assert event_of(actions, "job.terminated").level == "warning"
    # its last word on that job is expected, not a protocol error
    assert rig.report("AW_a", "AJ_unknown", ReportedJobStatus.SUCCESS) == []


def test_migrating_a_job_held_by_a_live_worker_stops_the_copy() -> None:
    rig = Rig()
    rig.register("AW_a")
    _, job_id = rig.assign("AD_1")
    rig.register("AW_b")
    actions = rig.migrate("AW_b", job_id)
    assert of(actions, SendTermination) == [SendTermination("AW_b", job_id)]
    assert "held by worker AW_a" in event_of(actions, "job.terminated").message
    job = rig.d.job(job_id)
    assert job is not None and job.worker_id == "AW_a"


def test_migrating_a_finished_or_pending_job_stops_the_copy() -> None:
    rig = Rig()
    rig.register("AW_a")
    _, done = rig.assign("AD_1")
    rig.report("AW_a", done, ReportedJobStatus.SUCCESS)
    rig.create("AD_2", agent="bot")
    waiting = rig.job_of("AD_2").job_id
    rig.register("AW_bot", agent="bot")
    rig.gone("AW_bot")  # the offer goes back to the queue
    rig.register("AW_b")
    actions = rig.migrate("AW_b", done, waiting)
    assert of(actions, SendTermination) == [
        SendTermination("AW_b", done),
        SendTermination("AW_b", waiting),
    ]


def test_migrating_a_job_of_another_owner_is_refused() -> None:
    rig = Rig()
    rig.register("AW_prod", agent="bot")
    _, job_id = rig.assign("AD_1", agent="bot")
    rig.gone("AW_prod")
    rig.register("AW_alice", agent="bot", owner="alice")
    actions = rig.migrate("AW_alice", job_id)
    assert of(actions, SendTermination) == [SendTermination("AW_alice", job_id)]
    job = rig.d.job(job_id)
    assert job is not None and job.state is JobState.ORPHANED


def test_migrating_a_job_of_another_project_leaks_nothing() -> None:
    rig = Rig()
    rig.register("AW_a")
    _, job_id = rig.assign("AD_1")
    rig.gone("AW_a")
    rig.register("AW_x", project="P_two")
    actions = rig.migrate("AW_x", job_id)
    assert of(actions, SendTermination) == [SendTermination("AW_x", job_id)]
    assert {e.project_id for e in of(actions, RecordEvent)} == {"P_two"}
    assert all(e.dispatch_id == "" for e in of(actions, RecordEvent))


# -- deletion --------------------------------------------------------------------------------------


def test_dispatch_deleted_terminates_its_job() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.assign("AD_1")
    actions = rig.delete("AD_1", "user asked")
    assert of(actions, SendTermination) == [SendTermination(worker_id, job_id)]
    saved = one(actions, SaveDispatch).record
    assert saved.deleted is True and saved.trace[-1].what == "deleted"
    assert kinds(actions) == ["job.terminated", "dispatch.deleted"]
    job = one(actions, SaveJob).record
    assert job.job_id == job_id and job.state is JobState.TERMINATED
    assert job.error == "dispatch deleted: user asked"
    assert rig.d.dispatches(PROJECT) == []
    # saved, then forgotten: memory stays bounded, the store keeps the record for explain
    assert rig.d.dispatch("AD_1") is None and rig.d.job(job_id) is None
    assert rig.d.next_deadline_ms() is None
    # the worker's last report on the job it was told to end is not an error
    assert rig.report(worker_id, job_id, ReportedJobStatus.SUCCESS) == []
    assert rig.delete("AD_1") == []
    assert rig.delete("AD_unknown") == []


def test_deleting_an_offered_job_tells_the_offered_worker() -> None:
    rig = Rig()
    rig.register("AW_a")
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    actions = rig.delete("AD_1")
    assert of(actions, SendTermination) == [SendTermination(worker_id, job_id)]
    assert of(rig.answer(worker_id, job_id), SendAssignment) == []
    assert rig.d.next_deadline_ms() is None


def test_deleting_a_queued_or_orphaned_job_sends_nothing() -> None:
    rig = Rig()
    rig.create("AD_q", agent="bot")
    rig.register("AW_a")
    rig.assign("AD_o")
    rig.gone("AW_a")
    for dispatch_id in ("AD_q", "AD_o"):
        actions = rig.delete(dispatch_id)
        assert of(actions, SendTermination) == []
        assert one(actions, SaveJob).record.state is JobState.TERMINATED
    assert rig.d.pending_count(PROJECT) == 0 and rig.d.next_deadline_ms() is None


def test_room_closed_ends_every_dispatch_of_that_room_only() -> None:
    rig = Rig()
    rig.register("AW_a")
    rig.register("AW_b", agent="bot")
    _, j1 = rig.assign("AD_1", room="r1")
    _, j2 = rig.assign("AD_2", room="r1", agent="bot")
    _, j3 = rig.assign("AD_3", room="r2")
    rig.create("AD_4", room="r1", agent="nobody")
    actions = rig.feed(RoomClosed(PROJECT, "r1", "empty", rig.now))
    assert {t.job_id for t in of(actions, SendTermination)} == {j1, j2}
    assert {r.record.spec.dispatch_id for r in of(actions, SaveDispatch)} == {
        "AD_1",
        "AD_2",
        "AD_4",
    }
    assert [r.spec.dispatch_id for r in rig.d.dispatches(PROJECT)] == ["AD_3"]
    job = rig.d.job(j3)
    assert job is not None and job.state is JobState.ASSIGNED
    assert rig.feed(RoomClosed("P_two", "r2", "empty", rig.now)) == []


def test_participant_dispatch_is_only_recorded() -> None:
    rig = Rig()
    rig.register("AW_p", job_type=JobType.PARTICIPANT)
    actions = rig.create("AD_1", job_type=JobType.PARTICIPANT)
    assert [type(a) for a in actions] == [SaveDispatch, RecordEvent]
    assert rig.d.jobs_of_dispatch("AD_1") == []
    assert [r.spec.dispatch_id for r in rig.d.dispatches(PROJECT, "room-1")] == ["AD_1"]


def test_duplicate_dispatch_is_ignored() -> None:
    rig = Rig()
    rig.create("AD_1")
    actions = rig.create("AD_1")
    assert kinds(actions) == ["protocol.error"] and len(actions) == 1
    assert len(rig.d.jobs_of_dispatch("AD_1")) == 1


def test_dispatch_without_creation_time_gets_the_events() -> None:
    rig = Rig()
    rig.now = T0 + 42
    rig.create("AD_1", created_at_ms=0)
    record = rig.d.dispatch("AD_1")
    assert record is not None and record.spec.created_at_ms == T0 + 42


# -- restart ---------------------------------------------------------------------------------------


def stored(rig: Rig) -> tuple[tuple[DispatchRecord, ...], tuple[JobRecord, ...]]:
    ids = [f"AD_{n}" for n in range(1, 10)]
    dispatches = tuple(r for i in ids if (r := rig.d.dispatch(i)) is not None)
    jobs = tuple(j for i in ids for j in rig.d.jobs_of_dispatch(i))
    return dispatches, jobs


def test_restored_running_job_waits_the_grace_window_for_its_worker() -> None:
    old = Rig()
    old.register("AW_a", agent="bot")
    _, job_id = old.assign("AD_1", agent="bot")
    old.report("AW_a", job_id, ReportedJobStatus.RUNNING)
    dispatches, jobs = stored(old)

    rig = Rig(redispatch_grace_ms=10_000)
    rig.now = T0 + 60_000
    actions = rig.feed(Restored(dispatches, jobs, rig.now))
    job = rig.d.job(job_id)
    assert job is not None and (job.state, job.worker_id) == (JobState.ORPHANED, "AW_a")
    assert one(actions, SaveJob).record == job
    assert rig.d.next_deadline_ms() == rig.now + 10_000
    assert rig.whats("AD_1")[-1] == "restored"
    rig.now += 2000
    rig.register("AW_new", agent="bot")
    assert kinds(rig.migrate("AW_new", job_id)) == ["job.migrated"]
    assert rig.d.jobs_of_dispatch("AD_1") == [rig.d.job(job_id)]


def test_restored_running_job_is_dispatched_again_past_grace() -> None:
    old = Rig()
    old.register("AW_a")
    old.assign("AD_1")
    dispatches, jobs = stored(old)
    rig = Rig(redispatch_grace_ms=10_000)
    rig.feed(Restored(dispatches, jobs, rig.now))
    rig.register("AW_b")
    assert rig.offered(rig.later(10_000))[0] == "AW_b"
    assert [j.attempt for j in rig.d.jobs_of_dispatch("AD_1")] == [1, 2]


def test_restored_offered_and_pending_jobs_wait_for_workers_within_their_ttl() -> None:
    old = Rig()
    old.register("AW_a")
    old.offered(old.create("AD_1"))  # offered, unanswered
    old.create("AD_2", agent="bot")  # queued
    dispatches, jobs = stored(old)
    rig = Rig(pending_ttl_ms=600_000)
    rig.now = T0 + 100_000
    rig.feed(Restored(dispatches, jobs, rig.now))
    assert [rig.job_of(d).state for d in ("AD_1", "AD_2")] == [JobState.PENDING] * 2
    assert rig.job_of("AD_1").worker_id == ""
    assert rig.d.pending_count(PROJECT) == 2
    assert rig.d.next_deadline_ms() == T0 + 600_000  # from the dispatches' creation
    assert rig.offered(rig.register("AW_b")) == ("AW_b", rig.job_of("AD_1").job_id)
    rig.at(T0 + 600_000)
    assert rig.job_of("AD_2").state is JobState.EXPIRED


def test_restore_keeps_finished_jobs_and_ends_live_jobs_of_deleted_dispatches() -> None:
    old = Rig()
    old.register("AW_a")
    _, done = old.assign("AD_1")
    old.report("AW_a", done, ReportedJobStatus.SUCCESS)
    old.assign("AD_2")
    dispatches, jobs = stored(old)
    gone = tuple(
        replace(d, deleted=True) if d.spec.dispatch_id == "AD_2" else d for d in dispatches
    )
    rig = Rig()
    actions = rig.feed(Restored(gone, jobs, rig.now))
    assert rig.job_of("AD_1").state is JobState.SUCCESS
    assert rig.job_of("AD_2").state is JobState.TERMINATED
    assert [s.record.job_id for s in of(actions, SaveJob)] == [rig.job_of("AD_2").job_id]
    assert [d.spec.dispatch_id for d in rig.d.dispatches(PROJECT)] == ["AD_1"]
    assert rig.d.next_deadline_ms() is None


# -- explain trace and event log -------------------------------------------------------------------


def test_trace_of_an_assigned_dispatch() -> None:
    rig = Rig()
    rig.register("AW_a", agent="bot")
    rig.status("AW_a", WorkerStatus.AVAILABLE, 0.25)
    worker_id, job_id = rig.offered(rig.create("AD_1", agent="bot", owner=""))
    rig.now += 120
    rig.answer(worker_id, job_id)
    trace = rig.trace("AD_1")
    assert [w for w, _ in trace] == ["created", "candidates", "offered", "assigned"]
    assert trace[0][1] == {
        "source": "api",
        "agent_name": "bot",
        "owner": "",
        "room": "room-1",
        "job_type": "room",
    }
    assert trace[1][1] == {
        "job": job_id,
        "workers": [
            {
                "worker_id": "AW_a",
                "load": 0.25,
                "status": "available",
                "remote": "10.0.0.4:4000",
                "tried": False,
            }
        ],
    }
    assert trace[2][1] == {"job": job_id, "worker": "AW_a", "load": 0.25}
    assert trace[3][1] == {
        "job": job_id,
        "worker": "AW_a",
        "identity": f"agent-{job_id}",
        "elapsed_ms": 120,
    }
    record = rig.d.dispatch("AD_1")
    assert record is not None and record.trace[3].at_ms == T0 + 120


def test_candidate_lines_follow_every_worker_change() -> None:
    """Candidate lines are shared between jobs of a pool until a worker changes."""
    rig = Rig()
    rig.register("AW_a", agent="bot")
    rig.status("AW_a", WorkerStatus.AVAILABLE, 0.25)

    def listed(dispatch_id: str) -> list[tuple[str, float, str]]:
        rig.create(dispatch_id, agent="bot")
        _, detail = rig.trace(dispatch_id)[1]
        return [(w["worker_id"], w["load"], w["status"]) for w in detail["workers"]]

    assert listed("AD_1") == [("AW_a", 0.25, "available")]
    rig.status("AW_a", WorkerStatus.AVAILABLE, 0.5)
    assert listed("AD_2") == [("AW_a", 0.5, "available")]
    rig.register("AW_b", agent="bot")
    assert listed("AD_3") == [("AW_a", 0.5, "available"), ("AW_b", 0.0, "available")]
    rig.status("AW_b", WorkerStatus.FULL, 1.0)
    assert listed("AD_4") == [("AW_a", 0.5, "available"), ("AW_b", 1.0, "full")]
    rig.gone("AW_a")
    assert listed("AD_5") == [("AW_b", 1.0, "full")]
    assert rig.trace("AD_1")[1][1]["workers"][0]["load"] == 0.25  # earlier traces unchanged


def test_trace_explains_a_developer_worker_vs_production_credentials() -> None:
    rig = Rig()
    rig.register("AW_laptop", agent="bot", owner="alice")
    rig.register("AW_ns", agent="bot", namespace="staging")
    rig.register("AW_other", agent="other")
    rig.register("AW_elsewhere", agent="bot", project="P_two")
    actions = rig.create("AD_1", agent="bot")
    what, detail = rig.trace("AD_1")[1]
    assert what == "candidates" and detail["workers"] == []
    assert detail["not_matching"] == {
        "other_agent_name": 1,
        "other_namespace": 1,
        "other_owner": 1,
    }
    why = detail["why"]
    assert why.startswith(
        "no worker registered for agent 'bot' with production credentials in project P_one"
    )
    assert "(it runs for developer 'alice'; 1 in another namespace)" in why
    assert "1 in another namespace" in why
    assert rig.trace("AD_1")[2] == ("queued", {"job": rig.job_of("AD_1").job_id, "why": why})
    assert event_of(actions, "dispatch.queued").message.endswith(why)


def test_trace_for_unnamed_agents() -> None:
    rig = Rig()
    actions = rig.create("AD_1", owner="bob")
    message = event_of(actions, "dispatch.queued").message
    assert "unnamed agents (automatic dispatch) with developer 'bob' credentials" in message


def test_queue_reason_mixes_full_and_declined() -> None:
    rig = Rig()
    rig.register("AW_a")
    rig.register("AW_b")
    rig.status("AW_b", WorkerStatus.FULL, 1.0)
    worker_id, job_id = rig.offered(rig.create("AD_1"))
    actions = rig.answer(worker_id, job_id, available=False)
    assert "2 matching workers: 1 FULL, 1 declined" in event_of(actions, "dispatch.queued").message
    rig.register("AW_c")
    rig.status("AW_c", WorkerStatus.FULL, 1.0)
    rig.status("AW_a", WorkerStatus.FULL, 1.0)
    actions = rig.create("AD_2")
    assert "3 matching workers all FULL" in event_of(actions, "dispatch.queued").message
    rig.status("AW_c", WorkerStatus.AVAILABLE, 1.0)
    actions = rig.create("AD_3")
    assert of(actions, SendAvailabilityRequest)


def test_candidate_list_is_capped() -> None:
    rig = Rig()
    for n in range(25):
        rig.register(f"AW_{n:02}")
    rig.create("AD_1")
    detail = rig.trace("AD_1")[1][1]
    assert len(detail["workers"]) == 20 and detail["more"] == 5


def test_every_trace_change_is_saved_with_the_current_trace() -> None:
    rig = Rig(availability_timeout_ms=100, redispatch_grace_ms=100)
    steps: list[Callable[[], list[Action]]] = [
        lambda: rig.create("AD_1"),
        lambda: rig.register("AW_a"),
        lambda: rig.later(100),
        lambda: rig.status("AW_a", WorkerStatus.FULL, 1.0),
        lambda: rig.status("AW_a", WorkerStatus.AVAILABLE, 0.0),
        lambda: rig.answer("AW_a", rig.job_of("AD_1").job_id),
        lambda: rig.gone("AW_a"),
        lambda: rig.register("AW_b"),
        lambda: rig.later(100),
        lambda: rig.delete("AD_1"),
    ]
    seen = 0
    last: DispatchRecord | None = None
    for step in steps:
        actions = step()
        saves = of(actions, SaveDispatch)
        record = rig.d.dispatch("AD_1") or (saves[-1].record if saves else None)
        assert record is not None
        last = record
        if len(record.trace) != seen:
            assert [s.record for s in saves] == [record]
        else:
            assert saves == []
        seen = len(record.trace)
        for save in of(actions, SaveJob):
            held = rig.d.job(save.record.job_id)
            assert held == save.record or (held is None and save.record.state.is_terminal)
    assert last is not None
    assert [t.what for t in last.trace] == [
        "created",
        "candidates",
        "queued",
        "candidates",
        "offered",
        "timeout",
        "candidates",
        "queued",
        "candidates",
        "offered",
        "assigned",
        "orphaned",
        "ended",
        "redispatched",
        "candidates",
        "offered",
        "ended",
        "deleted",
    ]


def test_events_carry_what_is_known() -> None:
    rig = Rig()
    actions = rig.register("AW_a", agent="bot", owner="alice")
    connected = event_of(actions, "worker.connected")
    assert (connected.project_id, connected.worker_id, connected.agent_name, connected.owner) == (
        PROJECT,
        "AW_a",
        "bot",
        "alice",
    )
    assert "developer 'alice'" in connected.message
    actions = rig.create("AD_1", agent="bot", owner="alice", room="lobby")
    offered = event_of(actions, "job.offered")
    job = rig.job_of("AD_1")
    assert (
        offered.project_id,
        offered.room_name,
        offered.dispatch_id,
        offered.job_id,
        offered.worker_id,
        offered.agent_name,
        offered.owner,
        offered.at_ms,
    ) == (PROJECT, "lobby", "AD_1", job.job_id, "AW_a", "bot", "alice", rig.now)
    created = event_of(actions, "dispatch.created")
    assert (created.dispatch_id, created.room_name, created.job_id) == ("AD_1", "lobby", "")
    declined = event_of(rig.answer("AW_a", job.job_id, available=False), "job.declined")
    assert declined.worker_id == "AW_a"
    assert event_of(rig.gone("AW_a"), "worker.disconnected").worker_id == "AW_a"


def test_duplicate_registration_is_ignored() -> None:
    rig = Rig()
    rig.register("AW_a")
    assert kinds(rig.register("AW_a", agent="other")) == ["protocol.error"]
    view = rig.d.worker("AW_a")
    assert view is not None and view.info.agent_name == ""


def test_events_from_unknown_workers_are_ignored() -> None:
    rig = Rig()
    assert rig.status("AW_x", WorkerStatus.AVAILABLE, 0.1) == []
    assert rig.gone("AW_x") == []
    assert rig.migrate("AW_x", "AJ_1") == []


# -- next deadline ---------------------------------------------------------------------------------


def test_next_deadline_is_the_earliest_timer() -> None:
    rig = Rig(availability_timeout_ms=5000, pending_ttl_ms=60_000, redispatch_grace_ms=10_000)
    rig.create("AD_q", agent="nobody")  # queued: T0 + 60 s
    assert rig.d.next_deadline_ms() == T0 + 60_000
    rig.register("AW_a")
    rig.now += 1000
    rig.create("AD_o")  # offered: T0 + 1 s + 5 s
    assert rig.d.next_deadline_ms() == T0 + 6000
    rig.answer("AW_a", rig.job_of("AD_o").job_id)
    assert rig.d.next_deadline_ms() == T0 + 60_000
    rig.now += 1000
    rig.gone("AW_a")  # orphaned: T0 + 2 s + 10 s
    assert rig.d.next_deadline_ms() == T0 + 12_000
    rig.at(T0 + 12_000)  # grace over; attempt 2 queued with its own TTL
    assert rig.d.next_deadline_ms() == T0 + 60_000
    rig.at(T0 + 60_000)
    assert rig.d.next_deadline_ms() == T0 + 12_000 + 60_000
    rig.at(T0 + 72_000)
    assert rig.d.next_deadline_ms() is None


def test_a_tick_before_any_deadline_does_nothing() -> None:
    rig = Rig()
    rig.register("AW_a")
    rig.create("AD_1")
    assert rig.later(4999) == []


def test_many_timers_due_at_one_tick_fire_in_order() -> None:
    rig = Rig(pending_ttl_ms=1000)
    for n in range(5):
        rig.create(f"AD_{n}", agent="nobody")
        rig.now += 1
    actions = rig.later(10_000)
    assert [e.dispatch_id for e in of(actions, RecordEvent)] == [f"AD_{n}" for n in range(5)]


def test_timers_cleared_in_bulk_do_not_pile_up_and_live_ones_keep_their_order() -> None:
    """Under load nearly every job clears its start timeout at once; the heap stays bounded."""
    timers = Timers()
    for n in range(50_000):
        timers.set(f"AJ_{n}", 60_000 + n)
        if n % 1000:  # one job in a thousand never reports: its deadline stays
            timers.clear(f"AJ_{n}")
    assert len(timers) <= 2 * 50 + COMPACT_SLACK + 1
    timers.set("AJ_tie", 60_000)  # due with AJ_0, set after it
    fired = []
    while (job_id := timers.pop_due(200_000)) is not None:
        fired.append(job_id)
    assert fired == ["AJ_0", "AJ_tie", *[f"AJ_{n}" for n in range(1000, 50_000, 1000)]]
    assert len(timers) == 0 and timers.next_ms() is None


# -- queries ---------------------------------------------------------------------------------------


def test_queries() -> None:
    rig = Rig()
    rig.register("AW_b")
    rig.now += 1
    rig.register("AW_a", owner="alice")
    rig.register("AW_x", project="P_two")
    rig.create("AD_1", room="r1")
    rig.create("AD_2", room="r2", agent="nobody")
    assert [w.info.worker_id for w in rig.d.workers(PROJECT)] == ["AW_b", "AW_a"]
    assert [d.spec.dispatch_id for d in rig.d.dispatches(PROJECT)] == ["AD_1", "AD_2"]
    assert [d.spec.dispatch_id for d in rig.d.dispatches(PROJECT, "r2")] == ["AD_2"]
    assert rig.d.dispatches("P_two") == []
    assert rig.d.pending_count(PROJECT) == 1 and rig.d.pending_count("P_two") == 0
    view = rig.d.worker("AW_b")
    assert view is not None and view.job_ids == ()  # offered, not yet held
    rig.feed(WorkerStatusChanged("AW_b", None, 0.5, 3, rig.now))
    view = rig.d.worker("AW_b")
    assert view is not None and (view.load, view.reported_job_count) == (0.5, 3)


# -- properties ------------------------------------------------------------------------------------

WORKERS = {
    "AW_p1": worker_info("AW_p1"),
    "AW_p2": worker_info("AW_p2"),
    "AW_dev": worker_info("AW_dev", owner="alice"),
    "AW_bot": worker_info("AW_bot", agent="bot"),
    "AW_botp": worker_info("AW_botp", agent="bot", job_type=JobType.PARTICIPANT),
}
SPECS: list[dict[str, Any]] = [
    {},
    {"owner": "alice"},
    {"agent": "bot"},
    {"agent": "bot", "room": "room-2"},
]

_WORKER = st.sampled_from(sorted(WORKERS))
_INDEX = st.integers(0, 50)
_REPORT = st.sampled_from(list(ReportedJobStatus))
_WEIGHTED_OPS: list[tuple[int, st.SearchStrategy[tuple[Any, ...]]]] = [
    (3, st.tuples(st.just("register"), _WORKER)),
    (
        2,
        st.tuples(
            st.just("status"),
            _WORKER,
            st.sampled_from([None, WorkerStatus.AVAILABLE, WorkerStatus.FULL]),
            st.floats(0, 1.2),
        ),
    ),
    (2, st.tuples(st.just("gone"), _WORKER)),
    (4, st.tuples(st.just("create"), st.integers(0, len(SPECS) - 1))),
    (1, st.tuples(st.just("delete"), _INDEX)),
    (1, st.tuples(st.just("room_closed"), st.sampled_from(["room-1", "room-2"]))),
    (
        2,
        st.tuples(
            st.just("join"), st.sampled_from(["room-1", "room-2"]), st.sampled_from(["ann", "bo"])
        ),
    ),
    (
        5,
        st.tuples(
            st.just("answer"),
            _INDEX,
            st.sampled_from([True, True, False]),
            st.sampled_from([False, False, False, True]),
        ),
    ),
    (1, st.tuples(st.just("answer_any"), _WORKER, _INDEX)),
    (4, st.tuples(st.just("report"), _INDEX, _REPORT)),
    (1, st.tuples(st.just("report_any"), _WORKER, _INDEX, _REPORT)),
    (1, st.tuples(st.just("migrate"), _WORKER, _INDEX)),
    (3, st.tuples(st.just("migrate_orphan"), _INDEX, _INDEX)),
    (3, st.tuples(st.just("tick"), st.sampled_from([0, 500, 1000, 2000, 3000, 5000, 30_000]))),
    (1, st.tuples(st.just("restart"))),
]
# one_of would draw each kind equally often; drawing an index first keeps the weights
ops = st.sampled_from(
    [i for i, (weight, _) in enumerate(_WEIGHTED_OPS) for _ in range(weight)]
).flatmap(lambda i: _WEIGHTED_OPS[i][1])


class Model:
    """Drives a dispatcher with random operations and checks its invariants after each."""

    def __init__(self) -> None:
        self.d = self._new()
        self.now = T0
        self.dispatch_ids: list[str] = []
        self.registered: set[str] = set()

    @staticmethod
    def _new() -> Dispatcher:
        return Dispatcher(
            availability_timeout_ms=3000,
            pending_ttl_ms=30_000,
            redispatch_grace_ms=5000,
            redispatch_count=1,
            rng=random.Random(0),
        )

    def job_ids(self) -> list[str]:
        return [j.job_id for d in self.dispatch_ids for j in self.d.jobs_of_dispatch(d)]

    def pick_job(self, index: int, *states: JobState) -> str:
        """A known job (in one of `states`, if given): random picks would rarely hit a live one."""
        ids = [j for j in self.job_ids() if not states or self._state(j) in states]
        return ids[index % len(ids)] if ids else "AJ_none"

    def _state(self, job_id: str) -> JobState | None:
        job = self.d.job(job_id)
        return job.state if job else None

    def pick_dispatch(self, index: int) -> str:
        return self.dispatch_ids[index % len(self.dispatch_ids)] if self.dispatch_ids else "AD_x"

    def event_for(self, op: tuple[Any, ...]) -> Event:
        name, *args = op
        event: Event = getattr(self, f"_op_{name}")(*args)
        return event

    def _op_register(self, worker_id: str) -> Event:
        return WorkerRegistered(replace(WORKERS[worker_id], connected_at_ms=self.now), self.now)

    def _op_status(self, worker_id: str, status: WorkerStatus | None, load: float) -> Event:
        return WorkerStatusChanged(worker_id, status, load, 0, self.now)

    def _op_gone(self, worker_id: str) -> Event:
        return WorkerGone(worker_id, "test", self.now)

    def _op_create(self, variant: int) -> Event:
        dispatch_id = f"AD_{len(self.dispatch_ids)}"
        self.dispatch_ids.append(dispatch_id)
        return DispatchCreated(dispatch_spec(dispatch_id, **SPECS[variant]), self.now)

    def _op_delete(self, index: int) -> Event:
        return DispatchDeleted(self.pick_dispatch(index), "test", self.now)

    def _op_room_closed(self, room: str) -> Event:
        return RoomClosed(PROJECT, room, "test", self.now)

    def _op_join(self, room: str, identity: str) -> Event:
        who = ParticipantRef(f"PA_{identity}", identity)
        return ParticipantJoined(PROJECT, room, who, self.now)

    def _op_answer(self, index: int, available: bool, terminate: bool) -> Event:
        job = self.d.job(self.pick_job(index, JobState.OFFERED))
        if job is None:
            return Tick(self.now)
        return self._answer(job.worker_id, job.job_id, available, terminate)

    def _op_answer_any(self, worker_id: str, index: int) -> Event:
        return self._answer(worker_id, self.pick_job(index), True, False)

    def _op_report(self, index: int, status: ReportedJobStatus) -> Event:
        job = self.d.job(self.pick_job(index, JobState.ASSIGNED, JobState.RUNNING))
        if job is None:
            return Tick(self.now)
        return JobStatusReported(job.worker_id, job.job_id, status, "", self.now)

    def _op_report_any(self, worker_id: str, index: int, status: ReportedJobStatus) -> Event:
        return JobStatusReported(worker_id, self.pick_job(index), status, "", self.now)

    def _op_migrate(self, worker_id: str, index: int) -> Event:
        return JobsMigrated(worker_id, (self.pick_job(index),), self.now)

    def _op_migrate_orphan(self, worker_index: int, index: int) -> Event:
        """By a connected worker, which is what can succeed."""
        live = sorted(self.registered) or ["AW_p1"]
        job_id = self.pick_job(index, JobState.ORPHANED)
        return JobsMigrated(live[worker_index % len(live)], (job_id,), self.now)

    def _op_tick(self, ms: int) -> Event:
        self.now += ms
        return Tick(self.now)

    def _answer(self, worker: str, job_id: str, available: bool, terminate: bool) -> Event:
        return AvailabilityAnswered(worker, job_id, available, terminate, "", "", "", {}, self.now)

    def restart(self) -> None:
        dispatches = tuple(r for i in self.dispatch_ids if (r := self.d.dispatch(i)) is not None)
        jobs = tuple(j for i in self.dispatch_ids for j in self.d.jobs_of_dispatch(i))
        self.d = self._new()
        self.registered.clear()
        self.check(self.d.handle(Restored(dispatches, jobs, self.now)), {})

    def step(self, op: tuple[Any, ...]) -> None:
        self.now += 1
        if op[0] == "restart":
            self.restart()
            return
        event = self.event_for(op)
        before = {j: self.d.job(j) for j in self.job_ids()}
        actions = self.d.handle(event)
        if isinstance(event, WorkerRegistered):
            self.registered.add(event.info.worker_id)
        if isinstance(event, WorkerGone):
            self.registered.discard(event.worker_id)
        self.check(actions, before)
        for close in of(actions, CloseWorker):  # the transport drops a closed worker
            self.registered.discard(close.worker_id)
            self.check(self.d.handle(WorkerGone(close.worker_id, "closed", self.now)), {})

    def check(self, actions: list[Action], before: Mapping[str, JobRecord | None]) -> None:
        for assignment in of(actions, SendAssignment):
            prior = before.get(assignment.offer.job_id)
            assert prior is not None and prior.state is JobState.OFFERED
            assert prior.worker_id == assignment.worker_id
        for request in of(actions, SendAvailabilityRequest):
            assert request.worker_id in self.registered
            job = self.d.job(request.offer.job_id)
            assert job is not None and job.state is JobState.OFFERED
        for save in of(actions, SaveJob):
            held = self.d.job(save.record.job_id)
            # a deleted dispatch's jobs are saved terminal, then forgotten
            assert held == save.record or (held is None and save.record.state.is_terminal)
        for dispatch_id in self.dispatch_ids:
            by_lineage: dict[str, list[JobRecord]] = {}
            for job in self.d.jobs_of_dispatch(dispatch_id):  # the room's job, or one per joiner
                by_lineage.setdefault(job.participant.identity if job.participant else "", [])
                by_lineage[job.participant.identity if job.participant else ""].append(job)
            for jobs in by_lineage.values():
                busy = [j for j in jobs if j.state in (JobState.ASSIGNED, JobState.RUNNING)]
                assert len(busy) <= 1, busy
                assert sum(not j.state.is_terminal for j in jobs) <= 1, jobs
        self.check_indexes()
        deadline = self.d.next_deadline_ms()
        waiting = [
            j
            for j in (self.d.job(i) for i in self.job_ids())
            if j
            and j.state
            in (JobState.PENDING, JobState.OFFERED, JobState.ASSIGNED, JobState.ORPHANED)
        ]
        assert (deadline is None) == (not waiting)

    def check_indexes(self) -> None:
        """What the queries report agrees with the jobs themselves."""
        jobs = [j for j in (self.d.job(i) for i in self.job_ids()) if j is not None]
        pending = sum(j.state is JobState.PENDING for j in jobs)
        assert self.d.pending_count(PROJECT) == pending
        for view in self.d.workers(PROJECT):
            held = {
                j.job_id
                for j in jobs
                if j.worker_id == view.info.worker_id
                and j.state in (JobState.ASSIGNED, JobState.RUNNING)
            }
            assert set(view.job_ids) == held


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(ops, min_size=10, max_size=80))
def test_random_event_sequences_keep_the_invariants(sequence: list[tuple[Any, ...]]) -> None:
    model = Model()
    for op in sequence:
        model.step(op)


def test_update_job_for_an_orphaned_job_from_its_reconnected_worker_is_a_migration() -> None:
    """livekit-agents sends the queued update of a job that ended while it was disconnected before
    migrate_job (which lists only running jobs): it is recorded, not treated as a stranger's."""
    rig = Rig()
    rig.register("AW_old")
    _, job_id = rig.assign("AD_1")
    rig.report("AW_old", job_id, ReportedJobStatus.RUNNING)
    rig.gone("AW_old")
    rig.register("AW_new")
    actions = rig.report("AW_new", job_id, ReportedJobStatus.SUCCESS)
    assert of(actions, CloseWorker) == []
    assert rig.job_of("AD_1").state is JobState.SUCCESS
    assert rig.job_of("AD_1").worker_id == "AW_new"
    assert "migrated" in rig.whats("AD_1")
    assert len(rig.d.jobs_of_dispatch("AD_1")) == 1


def test_update_job_for_an_orphaned_job_from_another_agent_still_closes() -> None:
    rig = Rig()
    rig.register("AW_old")
    _, job_id = rig.assign("AD_1")
    rig.gone("AW_old")
    rig.register("AW_other", agent="someone-else")
    actions = rig.report("AW_other", job_id, ReportedJobStatus.SUCCESS)
    assert [c.worker_id for c in of(actions, CloseWorker)] == ["AW_other"]
    assert rig.job_of("AD_1").state is JobState.ORPHANED


# -- participant jobs (JT_PARTICIPANT) -------------------------------------------------------------


def test_no_participant_job_without_participant_workers() -> None:
    rig = Rig()
    rig.register("AW_room", agent="bot")
    rig.assign("AD_1", agent="bot")
    assert rig.join("caller") == []
    assert len(rig.d.jobs_of_dispatch("AD_1")) == 1


def test_participant_job_goes_to_a_participant_worker_with_the_participant() -> None:
    rig = Rig()
    rig.register("AW_room", agent="bot")
    rig.register("AW_part", agent="bot", job_type=JobType.PARTICIPANT)
    _, room_job = rig.assign("AD_1", agent="bot")
    actions = rig.join("caller")
    worker_id, job_id = rig.offered(actions)
    assert worker_id == "AW_part" and job_id != room_job
    offer = one(actions, SendAvailabilityRequest).offer
    assert offer.job_type is JobType.PARTICIPANT and offer.dispatch_id == "AD_1"
    assert offer.participant is not None and offer.participant.identity == "caller"
    assert offer.participant.sid == "PA_caller" and offer.attempt == 1
    assert "dispatch.participant_job" in kinds(actions)
    job = rig.d.job(job_id)
    assert job is not None and job.job_type is JobType.PARTICIPANT
    assert job.participant == offer.participant
    assignment = one(rig.answer(worker_id, job_id), SendAssignment)
    assert assignment.offer.participant == offer.participant
    assert ("participant_job", {"job": job_id, "participant": "caller"}) in rig.trace("AD_1")


def test_each_participant_gets_its_own_job_but_a_rejoin_does_not() -> None:
    rig = Rig()
    rig.register("AW_part", agent="bot", job_type=JobType.PARTICIPANT)
    rig.create("AD_1", agent="bot")  # its ROOM job waits for a ROOM worker
    rig.join("ann")
    rig.join("bo")
    assert rig.join("ann") == []  # same identity, job still live: no second agent
    jobs = rig.d.jobs_of_dispatch("AD_1")
    assert [(j.job_type, j.participant.identity if j.participant else "") for j in jobs] == [
        (JobType.ROOM, ""),
        (JobType.PARTICIPANT, "ann"),
        (JobType.PARTICIPANT, "bo"),
    ]
    ann = jobs[1]
    rig.answer("AW_part", ann.job_id)
    rig.report("AW_part", ann.job_id, ReportedJobStatus.SUCCESS)
    assert rig.offered(rig.join("ann"))[0] == "AW_part"  # the earlier job ended: a new one
    assert len(rig.d.jobs_of_dispatch("AD_1")) == 4


def test_participant_jobs_respect_owner_room_and_project() -> None:
    rig = Rig()
    rig.register("AW_dev", agent="bot", owner="alice", job_type=JobType.PARTICIPANT)
    rig.create("AD_prod", agent="bot")  # production dispatch: alice's worker is not its pool
    rig.create("AD_dev", agent="bot", owner="alice")
    rig.create("AD_other_room", agent="bot", owner="alice", room="room-2")
    rig.delete("AD_other_room")
    actions = rig.join("caller")
    assert rig.offered(actions)[0] == "AW_dev"
    assert [len(rig.d.jobs_of_dispatch(d)) for d in ("AD_prod", "AD_dev")] == [1, 2]
    assert rig.join("caller", project="P_two") == []
    assert rig.join("caller2", room="room-2") == []


def test_a_participant_dispatch_queues_its_jobs_even_with_no_worker() -> None:
    rig = Rig(pending_ttl_ms=60_000)
    rig.create("AD_1", agent="bot", job_type=JobType.PARTICIPANT)
    rig.now += 50_000
    actions = rig.join("caller")
    assert "dispatch.queued" in kinds(actions)
    job = rig.d.jobs_of_dispatch("AD_1")[0]
    # its TTL counts from the join, not from the dispatch's creation
    assert rig.d.next_deadline_ms() == rig.now + 60_000
    assert rig.offered(rig.register("AW_p", agent="bot", job_type=JobType.PARTICIPANT)) == (
        "AW_p",
        job.job_id,
    )


def test_a_participant_job_past_grace_is_dispatched_again_for_the_same_participant() -> None:
    rig = Rig(redispatch_grace_ms=1000)
    rig.register("AW_a", agent="bot", job_type=JobType.PARTICIPANT)
    rig.create("AD_1", agent="bot", job_type=JobType.PARTICIPANT)
    worker_id, job_id = rig.offered(rig.join("caller"))
    rig.answer(worker_id, job_id)
    rig.gone("AW_a")
    rig.register("AW_b", agent="bot", job_type=JobType.PARTICIPANT)
    actions = rig.later(1000)
    retry = one(actions, SendAvailabilityRequest).offer
    assert retry.job_type is JobType.PARTICIPANT and retry.attempt == 2
    assert retry.participant is not None and retry.participant.identity == "caller"
    assert one(actions, SendAvailabilityRequest).resuming


def test_room_closed_ends_participant_jobs_too() -> None:
    rig = Rig()
    rig.register("AW_part", agent="bot", job_type=JobType.PARTICIPANT)
    rig.create("AD_1", agent="bot")
    worker_id, job_id = rig.offered(rig.join("caller"))
    rig.answer(worker_id, job_id)
    actions = rig.feed(RoomClosed(PROJECT, "room-1", "empty", rig.now))
    assert [t.job_id for t in of(actions, SendTermination)] == [job_id]
    assert {s.record.state for s in of(actions, SaveJob)} == {JobState.TERMINATED}


def test_restored_participant_job_keeps_its_type_and_participant() -> None:
    old = Rig()
    old.register("AW_a", agent="bot", job_type=JobType.PARTICIPANT)
    old.create("AD_1", agent="bot", job_type=JobType.PARTICIPANT)
    worker_id, job_id = old.offered(old.join("caller"))
    old.answer(worker_id, job_id)
    dispatches, jobs = stored(old)
    rig = Rig(redispatch_grace_ms=1000)
    rig.feed(Restored(dispatches, jobs, rig.now))
    rig.register("AW_b", agent="bot")  # a ROOM worker of the agent may not take it
    rig.register("AW_c", agent="bot", job_type=JobType.PARTICIPANT)
    retry = one(rig.later(1000), SendAvailabilityRequest)
    assert retry.worker_id == "AW_c" and retry.offer.job_type is JobType.PARTICIPANT
    assert retry.offer.participant is not None and retry.offer.participant.identity == "caller"


@pytest.mark.parametrize(
    "detail",
    [
        {},
        {"job": "AJ_1", "workers": [{"worker_id": "AW_1", "load": 0.25, "tried": False}]},
        {"why": 'quote " and é and \u2028', "n": 3, "none": None, "nested": {"a": [1, 2.5]}},
        {"odd": {1, 2}},  # not JSON-native: diagnostic text
        {"load": 0.25, "ok": True, "no": False, "n": -3, "big": 10**30, "tiny": 1e-300},
        {"nan": float("nan"), "inf": float("-inf")},  # the encoder's spelling, not ours
        {"state": JobState.RUNNING, "type": JobType.ROOM},  # enums: the encoder decides
        {"ctl": "\x00\x1f\"\\/\t", "none": None, "workers": []},
        {1: "a non-string key"},
    ],
)
def test_trace_line_json_is_what_json_dumps_makes(detail: dict[Any, Any]) -> None:
    expected = json.dumps(
        [T0, "candidates", detail], separators=(",", ":"), ensure_ascii=False, default=str
    )
    assert trace_line(T0, "candidates", detail) == expected


def test_trace_lines_sharing_a_list_encode_it_the_same() -> None:
    rig = Rig()
    rig.register("AW_a", agent="bot")
    rig.create("AD_1", agent="bot")
    rig.create("AD_2", agent="bot")
    first, second = rig.d.dispatch("AD_1"), rig.d.dispatch("AD_2")
    assert first is not None and second is not None
    one, two = first.trace[1], second.trace[1]
    assert one.detail["workers"] == two.detail["workers"] != []  # the pool's lines
    assert first.trace_lines[1].replace(one.detail["job"], "") == second.trace_lines[1].replace(
        two.detail["job"], ""
    ).replace(str(two.at_ms), str(one.at_ms))


def test_a_moved_job_record_is_what_dataclasses_replace_makes() -> None:
    rec = JobRecord("AJ_1", "AD_1", PROJECT, "", "room-1", "bot", 1, JobState.OFFERED, "AW_1",
                    "", T0, T0)
    moved = rec.moved(JobState.ASSIGNED, T0 + 5, participant_identity="agent-AJ_1")
    assert moved == replace(rec, state=JobState.ASSIGNED, updated_at_ms=T0 + 5,
                            participant_identity="agent-AJ_1")
    assert rec.state is JobState.OFFERED  # the original is untouched
    with pytest.raises(TypeError):
        rec.moved(JobState.ASSIGNED, T0, no_such_field=1)
