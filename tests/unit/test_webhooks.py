"""Webhook delivery with an in-memory receiver: order, retries, bounds, signing, job events."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf import json_format
from livekit import api
from livekit.protocol import models
from livekit.protocol import webhook as whpb

from callboard.dispatch.model import (
    DispatchRecord,
    DispatchSpec,
    JobRecord,
    JobState,
    JobType,
    RoomRef,
    SaveDispatch,
    SaveJob,
)
from callboard.server import webhooks
from callboard.store.base import ApiKey, Project
from callboard.store.sqlite import SqliteStore


@dataclass
class Receiver:
    """Answers each POST with the next status of `script` (then 200); `gate` holds answers."""

    script: list[int | Exception] = field(default_factory=list)
    gate: asyncio.Event | None = None
    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    taken: list[whpb.WebhookEvent] = field(default_factory=list)

    async def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.posts.append((url, body, dict(headers)))
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.script.pop(0) if self.script else 200
        if isinstance(outcome, Exception):
            raise outcome
        if 200 <= outcome < 300:
            self.taken.append(_parse(body))
        return outcome

    def rooms_and_kinds(self) -> list[tuple[str, str]]:
        return [(e.room.name, e.event) for e in self.taken]


def _parse(body: bytes) -> whpb.WebhookEvent:
    return json_format.Parse(body.decode(), whpb.WebhookEvent())


@dataclass
class Rig:
    store: SqliteStore
    project: Project
    key: ApiKey
    receiver: Receiver
    notifier: webhooks.Notifier

    def emit(self, room: str, kind: str = webhooks.ROOM_STARTED) -> None:
        event = whpb.WebhookEvent(event=kind, room=models.Room(name=room))
        self.notifier.emit(self.project.project_id, room, event)

    async def settle(self) -> None:
        for _ in range(2000):
            if not self.notifier.busy():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("webhook queues did not drain")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "cb.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def make_rig(
    store: SqliteStore, receiver: Receiver | None = None, *, attempts: int = 5,
    queue_limit: int = webhooks.QUEUE_LIMIT,
) -> AsyncIterator[Rig]:
    project = await store.create_project("acme")
    key = await store.add_key(project.project_id)
    await store.add_webhook(project.project_id, "http://user:pw@hooks.test/in?token=t", key.key)
    receiver = receiver or Receiver()
    notifier = webhooks.Notifier(
        store, post=receiver, backoff_first_s=0.001, backoff_max_s=0.002, attempts=attempts,
        queue_limit=queue_limit,
    )
    await notifier.start()
    try:
        yield Rig(store, project, key, receiver, notifier)
    finally:
        await notifier.close(grace_s=0)


@pytest.fixture
async def rig(store: SqliteStore) -> AsyncIterator[Rig]:
    async for r in make_rig(store):
        yield r


# -- the wire -------------------------------------------------------------------------------------


async def test_deliveries_verify_with_livekit_webhook_receiver(rig: Rig) -> None:
    rig.emit("room-1")
    await rig.settle()
    url, body, headers = rig.receiver.posts[0]
    assert url == "http://user:pw@hooks.test/in?token=t"
    assert headers["Content-Type"] == "application/webhook+json"
    assert not headers["Authorization"].lower().startswith("bearer")
    receiver = api.WebhookReceiver(api.TokenVerifier(rig.key.key, rig.key.secret))
    event = receiver.receive(body.decode(), headers["Authorization"])
    assert event.event == "room_started" and event.room.name == "room-1"
    assert event.id.startswith("EV_") and event.created_at > 0
    with pytest.raises(Exception, match="hash mismatch"):
        receiver.receive(body.decode().replace("room-1", "room-2"), headers["Authorization"])


def test_sign_pins_the_body() -> None:
    token = webhooks.sign(b"{}", "APIk", "s" * 32, now_s=1000)
    claims = api.TokenVerifier("APIk", "s" * 32).verify(token, verify_signature=False)
    assert claims.sha256 == "RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o="


def test_safe_url_hides_credentials_and_query() -> None:
    assert webhooks.safe_url("https://u:p@h.test:8443/x?token=1#f") == "https://h.test:8443/x"


@pytest.mark.parametrize(
    ("url", "ok"),
    [("http://h/x", True), ("https://h", True), ("ftp://h/x", False), ("/x", False),
     ("http://", False), ("http://h/" + "x" * 2050, False)],
)
def test_check_url(url: str, ok: bool) -> None:
    assert (webhooks.check_url(url) is None) is ok


def _key(key: str, created: int, developer: str = "", revoked: bool = False) -> ApiKey:
    return ApiKey(key, "secret", "P_1", developer, created, revoked)


def test_signing_key_is_a_live_production_key_of_the_project() -> None:
    keys = [_key("APIdev", 1, developer="jack"), _key("APIold", 2, revoked=True),
            _key("APIprod2", 4), _key("APIprod1", 3), ApiKey("APIother", "s", "P_2", "", 0)]
    picked = webhooks.pick_signing_key(keys, "P_1")
    assert isinstance(picked, ApiKey) and picked.key == "APIprod1"  # oldest live production
    chosen = webhooks.pick_signing_key(keys, "P_1", "APIprod2")
    assert isinstance(chosen, ApiKey) and chosen.key == "APIprod2"
    for bad in ("APIdev", "APIold", "APIother", "APInope"):
        assert isinstance(webhooks.pick_signing_key(keys, "P_1", bad), str)
    assert "no production key" in str(webhooks.pick_signing_key(keys[:1], "P_1"))


@pytest.mark.parametrize(
    ("why", "reason"),
    [("departure timeout", models.ROOM_END_IDLE_TIMEOUT),
     ("empty timeout", models.ROOM_END_IDLE_TIMEOUT),
     ("room deleted through the API", models.ROOM_END_API_DELETE),
     ("server shutting down", models.ROOM_END_SERVER_SHUTDOWN),
     ("whatever", models.ROOM_END_UNKNOWN)],
)
def test_room_end_reason(why: str, reason: int) -> None:
    assert webhooks.room_end_reason(why) == reason


# -- delivery -------------------------------------------------------------------------------------


async def test_nothing_is_sent_for_a_project_without_webhooks(rig: Rig) -> None:
    rig.notifier.emit("P_other", "room-1", whpb.WebhookEvent(event="room_started"))
    assert not rig.notifier.busy() and rig.notifier.stats.emitted == 0
    assert not rig.notifier.wants("P_other") and rig.notifier.wants(rig.project.project_id)


async def test_events_keep_their_order_per_room(rig: Rig) -> None:
    for n in range(20):
        rig.emit(f"room-{n % 3}", f"kind-{n}")
    await rig.settle()
    for room in ("room-0", "room-1", "room-2"):
        got = [k for r, k in rig.receiver.rooms_and_kinds() if r == room]
        assert got == [f"kind-{n}" for n in range(20) if f"room-{n % 3}" == room]
    assert rig.notifier.stats.delivered == 20


async def test_failed_posts_are_retried_until_they_succeed(store: SqliteStore) -> None:
    receiver = Receiver(script=[503, OSError("refused"), TimeoutError(), 500])
    async for rig in make_rig(store, receiver, attempts=5):
        rig.emit("room-1", "first")
        rig.emit("room-1", "second")
        await rig.settle()
        assert rig.receiver.rooms_and_kinds() == [("room-1", "first"), ("room-1", "second")]
        assert len(receiver.posts) == 6 and rig.notifier.stats.failed_posts == 4
        assert rig.receiver.taken[0].num_dropped == 0


async def test_an_event_is_given_up_after_its_attempts_and_the_next_says_so(
    store: SqliteStore,
) -> None:
    async for rig in make_rig(store, Receiver(script=[503, 503, 503]), attempts=3):
        rig.emit("room-1", "lost")
        rig.emit("room-1", "next")
        await rig.settle()
        assert rig.receiver.rooms_and_kinds() == [("room-1", "next")]
        assert rig.receiver.taken[0].num_dropped == 1
        assert rig.notifier.stats.given_up == 1


async def test_a_4xx_answer_is_not_retried(store: SqliteStore) -> None:
    async for rig in make_rig(store, Receiver(script=[401]), attempts=5):
        rig.emit("room-1", "refused")
        rig.emit("room-1", "next")
        await rig.settle()
        assert len(rig.receiver.posts) == 2
        assert rig.receiver.rooms_and_kinds() == [("room-1", "next")]


async def test_a_stuck_receiver_keeps_the_newest_events_and_counts_the_rest(
    store: SqliteStore,
) -> None:
    receiver = Receiver(gate=asyncio.Event())
    async for rig in make_rig(store, receiver, queue_limit=3):
        rig.emit("room-1", "e0")
        await asyncio.sleep(0)  # e0 is being posted; the receiver does not answer
        for n in range(1, 10):
            rig.emit("room-1", f"e{n}")  # returns at once all the same
        assert rig.notifier.pending() == 3 and rig.notifier.stats.overflowed == 6
        receiver.gate.set()  # type: ignore[union-attr]
        await rig.settle()
        assert [k for _, k in rig.receiver.rooms_and_kinds()] == ["e0", "e7", "e8", "e9"]
        assert [e.num_dropped for e in rig.receiver.taken] == [0, 6, 0, 0]


async def test_one_stuck_room_does_not_hold_up_another(store: SqliteStore) -> None:
    gate = asyncio.Event()

    async def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        if b"stuck" in body:
            await gate.wait()
        delivered.append(_parse(body).room.name)
        return 200

    delivered: list[str] = []
    project = await store.create_project("acme")
    key = await store.add_key(project.project_id)
    await store.add_webhook(project.project_id, "http://hooks.test/", key.key)
    notifier = webhooks.Notifier(store, post=post)
    await notifier.start()
    notifier.emit(project.project_id, "stuck", whpb.WebhookEvent(room=models.Room(name="stuck")))
    notifier.emit(project.project_id, "fine", whpb.WebhookEvent(room=models.Room(name="fine")))
    for _ in range(100):
        if delivered:
            break
        await asyncio.sleep(0.001)
    assert delivered == ["fine"]
    gate.set()
    await notifier.close(grace_s=1)
    assert delivered == ["fine", "stuck"]


async def test_a_revoked_signing_key_stops_deliveries_and_its_secret_is_never_logged(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callboard.webhooks")
    rig.emit("room-1", "signed")
    await rig.settle()
    await rig.store.revoke_key(rig.key.key)
    rig.emit("room-1", "a")
    rig.emit("room-1", "b")
    await rig.settle()
    assert rig.receiver.rooms_and_kinds() == [("room-1", "signed")]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and rig.key.key in errors[0].getMessage()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert rig.key.secret not in text and "pw@" not in text and "token=t" not in text
    assert "Authorization" not in text


async def test_removing_a_webhook_drops_its_queues(store: SqliteStore) -> None:
    receiver = Receiver(gate=asyncio.Event())
    async for rig in make_rig(store, receiver):
        rig.emit("room-1")
        rig.emit("room-1")
        await asyncio.sleep(0)
        (hook,) = store.list_webhooks(rig.project.project_id)
        await store.delete_webhook(rig.project.project_id, hook.webhook_id)
        rig.notifier.reload(rig.project.project_id)
        assert not rig.notifier.busy()
        rig.emit("room-1")
        assert not rig.notifier.busy()


async def test_a_webhook_added_later_is_used_after_reload(store: SqliteStore) -> None:
    async for rig in make_rig(store):
        other = await store.add_webhook(rig.project.project_id, "http://second.test/", rig.key.key)
        rig.notifier.reload(rig.project.project_id)
        rig.emit("room-1")
        await rig.settle()
        assert sorted(u for u, _, _ in rig.receiver.posts) == sorted(
            ["http://user:pw@hooks.test/in?token=t", other.url]
        )


# -- agent job events ----------------------------------------------------------------------------

SPEC = DispatchSpec(
    dispatch_id="AD_1", project_id="P_1", owner="", api_key="APIk", agent_name="bot",
    room=RoomRef("P_1", "room-1", "RM_1"), metadata="m",
)


def _job(state: JobState, identity: str = "agent-AJ_1") -> JobRecord:
    return JobRecord("AJ_1", "AD_1", "P_1", "", "room-1", "bot", 1, state, "AW_1", "", 1, 2,
                     participant_identity=identity, job_type=JobType.ROOM)


@dataclass
class Sink:
    got: list[tuple[str, str, whpb.WebhookEvent]] = field(default_factory=list)
    projects: set[str] | None = None  # those with webhooks; None = every project

    def wants(self, project_id: str) -> bool:
        return self.projects is None or project_id in self.projects

    def emit(self, project_id: str, room_name: str, event: whpb.WebhookEvent) -> None:
        self.got.append((project_id, room_name, event))


def test_job_events_follow_the_saved_job_states() -> None:
    sink = Sink()
    events = webhooks.JobEvents(sink, lambda _: DispatchRecord(SPEC, False, (), ()))
    for state in (JobState.PENDING, JobState.OFFERED, JobState.ASSIGNED, JobState.RUNNING,
                  JobState.SUCCESS):
        events([SaveJob(_job(state))])
    assert [e.event for _, _, e in sink.got] == ["agent_job_started", "agent_job_ended"]
    project, room, ended = sink.got[1]
    assert (project, room) == ("P_1", "room-1")
    assert ended.room.sid == "RM_1" and ended.job.id == "AJ_1" and ended.job.agent_name == "bot"
    assert ended.job.state.status == 2  # JS_SUCCESS


def test_a_job_ended_with_its_deleted_dispatch_still_reports() -> None:
    sink = Sink()
    events = webhooks.JobEvents(sink, lambda _: None)
    record = DispatchRecord(SPEC, True, (), ("AJ_1",))
    events([SaveDispatch(record), SaveJob(_job(JobState.TERMINATED))])
    assert [e.event for _, _, e in sink.got] == ["agent_job_ended"]
    events([SaveJob(_job(JobState.FAILED))])  # unknown dispatch, not in the batch: skipped
    assert len(sink.got) == 1


def test_a_job_that_never_started_does_not_end() -> None:
    sink = Sink()
    events = webhooks.JobEvents(sink, lambda _: DispatchRecord(SPEC, False, (), ()))
    events([SaveJob(_job(JobState.EXPIRED, identity="")), SaveJob(_job(JobState.TERMINATED, ""))])
    assert sink.got == []


def test_job_events_build_nothing_for_a_project_without_webhooks() -> None:
    sink = Sink(projects={"P_other"})
    looked_up: list[str] = []

    def lookup(dispatch_id: str) -> DispatchRecord:
        looked_up.append(dispatch_id)
        return DispatchRecord(SPEC, False, (), ())

    events = webhooks.JobEvents(sink, lookup)
    events([SaveJob(_job(JobState.ASSIGNED)), SaveJob(_job(JobState.SUCCESS))])
    assert sink.got == [] and looked_up == []


def test_job_events_take_the_dispatch_as_last_saved_in_the_batch() -> None:
    sink = Sink()
    events = webhooks.JobEvents(sink, lambda _: None)
    first = DispatchRecord(SPEC, False, (), ("AJ_1",))
    later = DispatchRecord(dataclasses.replace(SPEC, metadata="newer"), False, (), ("AJ_1",))
    other = DispatchRecord(dataclasses.replace(SPEC, dispatch_id="AD_2"), False, (), ())
    events([SaveDispatch(first), SaveJob(_job(JobState.ASSIGNED)), SaveDispatch(later),
            SaveDispatch(other)])
    assert [e.job.metadata for _, _, e in sink.got] == ["newer"]
