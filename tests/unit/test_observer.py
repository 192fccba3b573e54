"""RoomEvents, the room observer: admission of job tokens, token dispatch, participant jobs,
room close, event-log lines and webhooks — driven with room views, a real hub and store."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from livekit.protocol import models
from livekit.protocol import webhook as whpb

from callboard.dispatch.model import (
    AvailabilityAnswered,
    DispatchRecord,
    DispatchSpec,
    JobRecord,
    JobState,
    JobType,
    ParticipantRef,
    RoomRef,
    Tick,
    WorkerGone,
    WorkerInfo,
    WorkerRegistered,
)
from callboard.protocol.errors import InvalidArgument, NotFound
from callboard.protocol.tokens import JobClaim, TokenClaims, VideoGrant
from callboard.rooms.contract import JoinContext, JoinRefused, ParticipantView, RoomView
from callboard.server import services
from callboard.server.hub import Hub
from callboard.server.observer import (
    RoomEvents,
    SupersededAgents,
    job_refusal,
    plan_token_dispatch,
    token_agents,
)
from callboard.settings import Settings
from callboard.store.base import ApiKey, EventQuery, Project, StoredEvent
from callboard.store.sqlite import SqliteStore

AGENT = models.ParticipantInfo.Kind.AGENT
STANDARD = models.ParticipantInfo.Kind.STANDARD
A = services.AgentRequest


# -- the decisions alone ---------------------------------------------------------------------------


def _spec(room: str = "room-1", project: str = "P_1") -> DispatchSpec:
    return DispatchSpec("AD_1", project, "", "APIk", "bot", RoomRef(project, room, "RM_1"))


def _job(job_id: str, attempt: int, state: JobState, **kw: Any) -> JobRecord:
    return JobRecord(job_id, "AD_1", "P_1", "", "room-1", "bot", attempt, state, "AW_1", "", 1, 2,
                     **kw)


CLAIM = JobClaim("AD_1", "AJ_1", 1)
LIVE = DispatchRecord(_spec(), False, (), ("AJ_1",))


@pytest.mark.parametrize("state", [JobState.ASSIGNED, JobState.RUNNING, JobState.ORPHANED])
def test_the_live_attempt_may_join(state: JobState) -> None:
    job = _job("AJ_1", 1, state)
    assert job_refusal(CLAIM, "P_1", "room-1", LIVE, job, [job]) is None


@pytest.mark.parametrize(
    ("project", "room", "dispatch", "job", "why"),
    [
        ("P_2", "room-1", LIVE, _job("AJ_1", 1, JobState.RUNNING), "not live in this project"),
        ("P_1", "room-2", LIVE, _job("AJ_1", 1, JobState.RUNNING), "is for room 'room-1'"),
        ("P_1", "room-1", None, None, "not live"),
        ("P_1", "room-1", replace(LIVE, deleted=True), None, "not live"),
        ("P_1", "room-1", LIVE, None, "not a job of this dispatch"),
        ("P_1", "room-1", LIVE, _job("AJ_1", 2, JobState.RUNNING), "not a job of this dispatch"),
        ("P_1", "room-1", LIVE, _job("AJ_1", 1, JobState.FAILED), "has ended (failed)"),
        ("P_1", "room-1", LIVE, _job("AJ_1", 1, JobState.SUCCESS), "has ended (success)"),
        ("P_1", "room-1", LIVE, _job("AJ_1", 1, JobState.PENDING), "not assigned"),
    ],
)
def test_job_tokens_that_may_not_join(
    project: str, room: str, dispatch: DispatchRecord | None, job: JobRecord | None, why: str
) -> None:
    refusal = job_refusal(CLAIM, project, room, dispatch, job, [job] if job else [])
    assert refusal is not None and why in refusal


def test_a_superseded_attempt_may_not_join_but_another_participants_job_may() -> None:
    old = _job("AJ_1", 1, JobState.RUNNING)  # a restored record that still says running
    retry = _job("AJ_2", 2, JobState.ASSIGNED)
    refusal = job_refusal(CLAIM, "P_1", "room-1", LIVE, old, [old, retry])
    assert refusal is not None and "superseded by attempt 2" in refusal
    other = _job("AJ_3", 2, JobState.RUNNING, job_type=JobType.PARTICIPANT,
                 participant=ParticipantRef("PA_x", "x"))
    assert job_refusal(CLAIM, "P_1", "room-1", LIVE, old, [old, other]) is None


def test_token_agents_reads_protobuf_json() -> None:
    config = {"agents": [{"agentName": "a", "metadata": "m"}, {"agent_name": "b"}],
              "emptyTimeout": 5, "unknownField": 1}
    assert token_agents(config) == [A("a", "m"), A("b", "")]
    assert token_agents(None) == [] and token_agents({}) == []


@pytest.mark.parametrize(
    "config",
    [{"agents": "nope"}, {"agents": [{"agentName": 3}]}, {"agents": [{"agentName": "x\n"}]},
     {"agents": [{"agentName": "a" * 300}]},
     {"agents": [{"agentName": "a", "metadata": "m" * (513 * 1024)}]}],
)
def test_token_agents_refuses_bad_configs(config: Mapping[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        token_agents(config)


def test_a_new_room_dispatches_the_token_agents_each_name_once() -> None:
    plan = plan_token_dispatch(True, [A("a", "1"), A("b"), A("a", "2")], set(), strict=False)
    assert plan.dispatch == [A("a", "1"), A("b")] and not plan.existing_room


def test_a_new_room_without_agents_gets_the_automatic_dispatch() -> None:
    assert plan_token_dispatch(True, [], set(), strict=True).dispatch == [A("")]


def test_an_existing_room_gets_the_named_agents_it_lacks() -> None:
    plan = plan_token_dispatch(False, [A("a"), A(""), A("b"), A("c")], {"b"}, strict=False)
    assert plan.dispatch == [A("a"), A("c")] and plan.existing_room and plan.ignored == []
    assert plan_token_dispatch(False, [], {"b"}, strict=False).dispatch == []


def test_strict_mode_ignores_the_token_in_an_existing_room() -> None:
    plan = plan_token_dispatch(False, [A("a"), A("b")], {"b"}, strict=True)
    assert plan.dispatch == [] and plan.ignored == ["a"]


# -- the observer on a real hub --------------------------------------------------------------------


@dataclass
class Sink:
    got: list[tuple[str, str, whpb.WebhookEvent]] = field(default_factory=list)
    projects: set[str] | None = None  # those with webhooks; None = every project

    def wants(self, project_id: str) -> bool:
        return self.projects is None or project_id in self.projects

    def emit(self, project_id: str, room_name: str, event: whpb.WebhookEvent) -> None:
        self.got.append((project_id, room_name, event))

    def kinds(self) -> list[str]:
        return [e.event for _, _, e in self.got]


@dataclass
class Rig:
    hub: Hub
    store: SqliteStore
    project: Project
    prod: ApiKey
    jack: ApiKey
    sink: Sink
    observer: RoomEvents
    room: RoomView
    count: int = 0

    def ctx(
        self,
        identity: str = "caller",
        *,
        key: ApiKey | None = None,
        created: bool = False,
        config: Mapping[str, Any] | None = None,
        kind: int = STANDARD,
        job: JobClaim | None = None,
        room: RoomView | None = None,
    ) -> JoinContext:
        key = key or self.prod
        self.count += 1
        claims = TokenClaims(api_key=key.key, identity=identity, expires_at_s=0,
                             video=VideoGrant(room_join=True, room=self.room.name),
                             room_config=config, job=job)
        participant = ParticipantView(
            sid=f"PA_{self.count}", identity=identity, name=identity.title(), kind=kind,
            metadata="", attributes={"lk.agent_name": "bot"} if kind == AGENT else {},
            joined_at_ms=1_000, api_key=key.key, owner=key.developer,
            job_id=job.job_id if job else "", dispatch_id=job.dispatch_id if job else "",
            attempt=job.attempt if job else 0,
            permissions={"can_publish": True, "hidden": False},
        )
        return JoinContext(room or self.room, participant, claims, key, created, config)

    def join(self, *args: Any, **kw: Any) -> JoinContext:
        ctx = self.ctx(*args, **kw)
        self.observer.admit(ctx)
        self.observer.participant_joined(ctx)
        return ctx

    def dispatches(self) -> list[DispatchRecord]:
        return self.hub.core.dispatches(self.project.project_id, self.room.name)

    async def events(self, prefix: str = "") -> list[StoredEvent]:
        await self.store.flush()
        query = EventQuery(self.project.project_id, kinds=(prefix,) if prefix else ())
        return self.store.query_events(query)

    def worker(self, worker_id: str, agent: str, job_type: JobType, owner: str = "") -> None:
        info = WorkerInfo(worker_id, self.project.project_id, self.prod.key, owner, agent, "",
                          job_type, "1", "", 0)
        self.hub.feed(WorkerRegistered(info, self.hub.clock_ms()))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteStore(tmp_path / "cb.db")
    await store.open()
    project = await store.create_project("acme")
    prod = await store.add_key(project.project_id)
    jack = await store.add_key(project.project_id, developer="jack")
    hub = Hub(Settings(), store, rng=random.Random(1))
    sink = Sink()
    room = RoomView(project.project_id, "room-1", "RM_room1", 1_000, creator_key=prod.key)
    try:
        yield Rig(hub, store, project, prod, jack, sink, RoomEvents(hub, sink), room)
    finally:
        hub.stop()
        await store.close()


async def test_a_join_that_creates_the_room_makes_the_automatic_dispatch(rig: Rig) -> None:
    rig.observer.room_started(rig.room, rig.prod)
    rig.join(key=rig.jack, created=True)
    (record,) = rig.dispatches()
    spec = record.spec
    assert (spec.agent_name, spec.source, spec.api_key, spec.owner) == ("", "token", rig.jack.key,
                                                                         "jack")
    assert spec.room == RoomRef(rig.project.project_id, "room-1", "RM_room1")
    assert rig.sink.kinds() == ["room_started", "participant_joined"]


async def test_a_join_that_creates_the_room_dispatches_the_token_agents(rig: Rig) -> None:
    config = {"agents": [{"agentName": "a", "metadata": "m"}, {"agentName": "b"},
                         {"agentName": "a"}]}
    rig.join(created=True, config=config)
    assert [(r.spec.agent_name, r.spec.metadata) for r in rig.dispatches()] == [("a", "m"),
                                                                                ("b", "")]
    assert await rig.events("dispatch.token") == []  # a new room: LiveKit does the same


async def test_an_existing_room_gets_named_agents_it_lacks_and_says_so(rig: Rig) -> None:
    rig.join(created=True)  # the automatic dispatch
    rig.join("second", config={"agents": [{"agentName": "a"}]}, key=rig.jack)
    rig.join("third", config={"agents": [{"agentName": "a"}, {"agentName": "b"}]})
    names = [(r.spec.agent_name, r.spec.owner) for r in rig.dispatches()]
    assert names == [("", ""), ("a", "jack"), ("b", "")]
    lines = await rig.events("dispatch.token")
    assert [(e.kind, e.agent_name, e.owner) for e in lines] == [
        ("dispatch.token", "a", "jack"),
        ("dispatch.token", "b", ""),
    ]
    assert "livekit#4390" in lines[0].message and lines[0].dispatch_id


async def test_strict_mode_ignores_tokens_for_existing_rooms(rig: Rig) -> None:
    rig.observer.strict = True
    rig.join(created=True, config={"agents": [{"agentName": "a"}]})
    rig.join("second", config={"agents": [{"agentName": "b"}]})
    assert [r.spec.agent_name for r in rig.dispatches()] == ["a"]
    (line,) = await rig.events("dispatch.token")
    assert line.kind == "dispatch.token_ignored" and "'b'" in line.message


async def test_a_bad_room_config_is_refused_at_admission(rig: Rig) -> None:
    with pytest.raises(JoinRefused) as refused:
        rig.observer.admit(rig.ctx(config={"agents": [{"agentName": "x\n"}]}))
    assert refused.value.status == 400 and "control characters" in refused.value.reason


async def test_agents_joining_dispatch_nothing(rig: Rig) -> None:
    config = {"agents": [{"agentName": "a"}]}
    rig.observer.participant_joined(rig.ctx("agent-x", kind=AGENT, created=True, config=config))
    assert rig.dispatches() == []
    (line,) = await rig.events("participant.joined")
    assert line.agent_name == "bot"


async def test_participant_jobs_for_dispatches_whose_agent_has_participant_workers(
    rig: Rig,
) -> None:
    rig.worker("AW_p", "bot", JobType.PARTICIPANT)
    rig.join("caller", created=True, config={"agents": [{"agentName": "bot"}]})
    (record,) = rig.dispatches()
    jobs = rig.hub.core.jobs_of_dispatch(record.spec.dispatch_id)
    assert [(j.job_type, j.participant.identity if j.participant else "") for j in jobs] == [
        (JobType.ROOM, ""), (JobType.PARTICIPANT, "caller")]
    assert jobs[1].participant is not None and jobs[1].participant.sid.startswith("PA_")
    rig.observer.participant_joined(rig.ctx("agent-y", kind=AGENT))
    rig.join("second")
    assert len(rig.hub.core.jobs_of_dispatch(record.spec.dispatch_id)) == 3


async def test_admit_follows_the_jobs_attempts(rig: Rig) -> None:
    rig.worker("AW_1", "bot", JobType.ROOM)
    rig.join(created=True, config={"agents": [{"agentName": "bot"}]})
    (record,) = rig.dispatches()
    (job,) = rig.hub.core.jobs_of_dispatch(record.spec.dispatch_id)
    now = rig.hub.clock_ms()
    rig.hub.feed(AvailabilityAnswered("AW_1", job.job_id, True, False, "", "", "", {}, now))
    claim = JobClaim(record.spec.dispatch_id, job.job_id, 1)
    rig.observer.admit(rig.ctx("agent-1", kind=AGENT, job=claim))  # the live attempt: in
    other_room = replace(rig.room, name="room-2")
    with pytest.raises(JoinRefused, match="is for room 'room-1'"):
        rig.observer.admit(rig.ctx("agent-1", kind=AGENT, job=claim, room=other_room))
    forged = JobClaim(record.spec.dispatch_id, job.job_id, 2)
    with pytest.raises(JoinRefused, match="not a job of this dispatch"):
        rig.observer.admit(rig.ctx("agent-1", kind=AGENT, job=forged))
    rig.hub.feed(WorkerGone("AW_1", "gone", now))
    rig.observer.admit(rig.ctx("agent-1", kind=AGENT, job=claim))  # orphaned: may come back


async def test_a_job_token_of_another_project_is_refused(rig: Rig) -> None:
    rig.join(created=True)
    (record,) = rig.dispatches()
    (job,) = rig.hub.core.jobs_of_dispatch(record.spec.dispatch_id)
    other = await rig.store.create_project("other")
    stranger = await rig.store.add_key(other.project_id)
    claim = JobClaim(record.spec.dispatch_id, job.job_id, 1)
    room = replace(rig.room, project_id=other.project_id)
    with pytest.raises(JoinRefused, match="not live in this project"):
        rig.observer.admit(rig.ctx("agent", kind=AGENT, key=stranger, job=claim, room=room))


async def test_room_finished_ends_its_dispatches_and_reports(rig: Rig) -> None:
    rig.observer.room_started(rig.room, rig.prod)
    ctx = rig.join(created=True, config={"agents": [{"agentName": "a"}]})
    rig.observer.participant_left(rig.room, ctx.participant, "CLIENT_INITIATED")
    rig.observer.room_finished(rig.room, "departure timeout")
    assert rig.dispatches() == []
    kinds = [e.kind for e in await rig.events()]
    assert kinds[0] == "room.started" and kinds[-1] == "room.finished"
    assert {"participant.joined", "participant.left", "dispatch.deleted"} <= set(kinds)
    assert rig.sink.kinds() == ["room_started", "participant_joined", "participant_left",
                                "room_finished"]
    _, _, left = rig.sink.got[2]
    assert left.participant.identity == "caller"
    assert left.participant.disconnect_reason == models.CLIENT_INITIATED
    _, room_name, finished = rig.sink.got[3]
    assert room_name == "room-1" and finished.room.sid == "RM_room1"
    assert finished.room_end_reason == models.ROOM_END_IDLE_TIMEOUT


async def test_a_project_without_webhooks_still_gets_every_event_line(rig: Rig) -> None:
    rig.sink.projects = set()
    rig.observer.room_started(rig.room, rig.prod)
    ctx = rig.join(created=True)
    rig.observer.participant_left(rig.room, ctx.participant, "CLIENT_INITIATED")
    rig.observer.room_finished(rig.room, "departure timeout")
    assert rig.sink.got == []
    kinds = [e.kind for e in await rig.events()]
    assert kinds[0] == "room.started" and kinds[-1] == "room.finished"
    assert {"participant.joined", "participant.left"} <= set(kinds)


async def test_event_lines_name_the_participant_and_its_owner(rig: Rig) -> None:
    rig.join("jack-phone", key=rig.jack, created=True)
    (line,) = await rig.events("participant.joined")
    assert line.owner == "jack" and line.room_name == "room-1"
    assert "jack-phone" in line.message and "standard" in line.message


# -- superseded agents ---------------------------------------------------------------------------


@dataclass
class Rooms:
    """The room manager as SupersededAgents sees it: who is where, and who was removed."""

    there: dict[tuple[str, str, str], ParticipantView] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def get_participant(self, project_id: str, room: str, identity: str) -> ParticipantView:
        found = self.there.get((project_id, room, identity))
        if found is None:
            raise NotFound(identity)
        return found

    def remove_participant(self, project_id: str, room: str, identity: str) -> ParticipantView:
        self.removed.append(identity)
        return self.there.pop((project_id, room, identity))


async def test_a_redispatch_removes_the_earlier_attempts_agent_from_the_room(rig: Rig) -> None:
    rooms = Rooms()
    rig.hub.listeners.append(SupersededAgents(rig.hub, rooms))
    rig.worker("AW_1", "bot", JobType.ROOM)
    rig.join(created=True, config={"agents": [{"agentName": "bot"}]})
    (record,) = rig.dispatches()
    (job,) = rig.hub.core.jobs_of_dispatch(record.spec.dispatch_id)
    now = rig.hub.clock_ms()
    rig.hub.feed(AvailabilityAnswered("AW_1", job.job_id, True, False, "agent-1", "", "", {}, now))
    claim = JobClaim(record.spec.dispatch_id, job.job_id, 1)
    agent = rig.ctx("agent-1", kind=AGENT, job=claim).participant
    bystander = rig.ctx("agent-2", kind=AGENT, job=JobClaim("AD_x", "AJ_other", 1)).participant
    rooms.there[(rig.project.project_id, "room-1", "agent-1")] = agent
    rooms.there[(rig.project.project_id, "room-1", "agent-2")] = bystander
    rig.hub.feed(WorkerGone("AW_1", "gone", now))
    assert rooms.removed == []  # within the grace window it may come back
    rig.hub.feed(Tick(now + 60_000))  # grace over: attempt 2 is made
    assert [j.attempt for j in rig.hub.core.jobs_of_dispatch(record.spec.dispatch_id)] == [1, 2]
    assert rooms.removed == ["agent-1"]
    (line,) = await rig.events("participant.superseded")
    assert line.job_id == job.job_id and line.level == "warning"
    rig.hub.feed(Tick(now + 120_000))
    assert rooms.removed == ["agent-1"]
