"""Developer isolation end to end: one project, a production key plus keys for jack and jill, every
worker named `my-agent` (light workers for volume, one real livekit-agents worker per key in its own
process), dispatches through the API and the CLI mixed across the three owners. Every job lands on
its owner's side, there is zero crosstalk, and usage, the event log and /metrics agree on the
counts.
Then the bad input of issue 7, and two projects with identical names that see nothing of each other.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from livekit import api
from livekit.protocol import agent as pb
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest, RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from callboard.client.worker import LightWorker, WorkerProtocol
from tests.support.agents import agent_fleet
from tests.support.cli import acb, creds, ok
from tests.support.clients import admin, light_worker, project_get, project_token, wait_for
from tests.support.rtc import Client, needs_netns, token
from tests.support.server import ServerProcess

AGENT = "my-agent"
OWNERS = ("", "jack", "jill")  # "" = production
API_DISPATCHES_PER_OWNER = 45
CLI_DISPATCHES_PER_OWNER = 5
LIGHT_WORKERS_PER_OWNER = 2
ROOMS_PER_OWNER = 10


@dataclass
class FinishingWorker(WorkerProtocol):
    """A light worker whose jobs end in success as soon as they are assigned."""

    def receive(self, msg: pb.ServerMessage) -> list[pb.WorkerMessage]:
        out = super().receive(msg)
        if msg.WhichOneof("message") == "assignment":
            out.append(self.job_update(msg.assignment.job.id, pb.JobStatus.JS_SUCCESS))
        return out


@dataclass
class Key:
    key: str
    secret: str
    owner: str
    workers: list[LightWorker] = field(default_factory=list)


def add_key(server: ServerProcess, project: str, developer: str) -> Key:
    status, body = admin(server, "POST", f"/projects/{project}/keys", {"developer": developer})
    assert status == 201, body
    return Key(body["key"], body["secret"], developer)


def team(server: ServerProcess, project: str = "team") -> dict[str, Key]:
    status, body = admin(server, "POST", "/projects", {"name": project})
    assert status == 201, body
    return {owner: add_key(server, project, owner) for owner in OWNERS}


async def get(http: aiohttp.ClientSession, server: ServerProcess, path: str, k: Key) -> Any:
    status, body = await project_get(http, server, path, k.key, k.secret)
    assert status == 200, body
    return body


async def events(http: aiohttp.ClientSession, server: ServerProcess, k: Key,
                 kind: str) -> list[dict[str, Any]]:
    """Every event of `kind` (a prefix), all pages."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        body = await get(http, server, f"/events?kind={kind}&after={after}&limit=1000", k)
        found += body["events"]
        if not body["events"]:
            return found
        after = body["next_after"]


async def metrics(http: aiohttp.ClientSession, server: ServerProcess, token: str) -> str:
    async with http.get(f"{server.http_url}/metrics",
                        headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def dispatch_api(server: ServerProcess, k: Key, rooms: list[str]) -> list[str]:
    async with api.LiveKitAPI(server.http_url, k.key, k.secret) as lk:
        made = await asyncio.gather(*(
            lk.agent_dispatch.create_dispatch(CreateAgentDispatchRequest(agent_name=AGENT, room=r))
            for r in rooms))
    return [d.id for d in made]


async def dispatch_cli(server: ServerProcess, k: Key, rooms: list[str]) -> list[str]:
    ids = []
    for room in rooms:
        out = ok(await acb("dispatch", "create", "--room", room, "--agent-name", AGENT,
                           *creds(server, k.key, k.secret)))
        ids.append(out.splitlines()[0].rsplit(": ", 1)[1])
    return ids


async def dispatch_mixed(server: ServerProcess, keys: dict[str, Key]) -> dict[str, list[str]]:
    """API dispatches of the three owners interleaved in a shuffled order, 25 in flight."""
    plan = [(owner, i) for owner in OWNERS for i in range(API_DISPATCHES_PER_OWNER)]
    random.Random(7).shuffle(plan)
    made: dict[str, list[str]] = {owner: [] for owner in OWNERS}
    clients = {o: api.LiveKitAPI(server.http_url, k.key, k.secret) for o, k in keys.items()}
    try:
        for n in range(0, len(plan), 25):
            batch = plan[n:n + 25]
            done = await asyncio.gather(*(clients[o].agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name=AGENT, room=f"room-{o or 'prod'}-{i}"))
                for o, i in batch))
            for (owner, _), d in zip(batch, done, strict=True):
                made[owner].append(d.id)
    finally:
        for lk in clients.values():
            await lk.aclose()
    for owner in OWNERS:
        rooms = [f"cli-{owner or 'prod'}-{i}" for i in range(CLI_DISPATCHES_PER_OWNER)]
        made[owner] += await dispatch_cli(server, keys[owner], rooms)
    return made


async def join_rooms(server: ServerProcess, keys: dict[str, Key], per_owner: int) -> list[Client]:
    """Rooms created by real SDK joins whose tokens (signed by each owner's key) ask for AGENT."""
    config = RoomConfiguration(agents=[RoomAgentDispatch(agent_name=AGENT)])
    clients: list[Client] = []
    for i in range(per_owner):
        for owner, k in keys.items():
            client = Client(f"caller-{owner or 'prod'}-{i}")
            await client.room.connect(server.ws_url, token(
                client.identity, f"call-{owner or 'prod'}-{i}", key=k.key, secret=k.secret,
                room_config=config))
            clients.append(client)
    return clients


async def exercise(server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path,
                   rooms_per_owner: int) -> None:
    """The whole scenario; `rooms_per_owner` rooms per owner come from token joins (WebRTC)."""
    keys = team(server)
    with agent_fleet(server, tmp_path / "agents") as fleet:
        real = {owner: fleet.start(AGENT, key=k.key, secret=k.secret) for owner, k in keys.items()}
        for k in keys.values():
            for _ in range(LIGHT_WORKERS_PER_OWNER):
                k.workers.append(await light_worker(http, server, key=k.key, secret=k.secret,
                                                    proto=FinishingWorker(agent_name=AGENT)))
        await fleet.wait_registered(http)
        joining = asyncio.create_task(join_rooms(server, keys, rooms_per_owner))
        made = await dispatch_mixed(server, keys)
        callers = await joining
        per_owner = API_DISPATCHES_PER_OWNER + CLI_DISPATCHES_PER_OWNER + rooms_per_owner
        total = per_owner * len(OWNERS)
        prod = keys[""]

        async def all_succeeded() -> bool:
            return len(await events(http, server, prod, "job.success")) >= total

        await wait_for(all_succeeded, timeout_s=30, interval_s=0.2)
        listed = {w["id"]: w for w in (await get(http, server, "/workers", prod))["workers"]}
        # every job ran on a worker of its own owner
        done = await events(http, server, prod, "job.success")
        assert len(done) == total
        for line in done:
            assert listed[line["worker_id"]]["developer"] == line.get("owner", ""), line
        assert Counter(e.get("owner", "") for e in done) == {o: per_owner for o in OWNERS}
        for owner, proc in real.items():  # each real worker got jobs, only its owner's
            assert proc.jobs(), f"real worker of {owner or 'production'} got no job"
            rooms = {f"call-{owner or 'prod'}-{i}" for i in range(rooms_per_owner)}
            assert {j["dispatch_id"] for j in proc.jobs() if j["room"] not in rooms} <= set(
                made[owner])
            assert all(j["room"].startswith(("room-", "cli-", "call-")) for j in proc.jobs())
            assert all(f"-{owner or 'prod'}-" in j["room"] for j in proc.jobs())
        # zero crosstalk
        assert (await get(http, server, "/crosstalk", prod))["crosstalk"] == []
        assert all(w["crosstalk"] == "" for w in listed.values())
        assert len(listed) == len(OWNERS) * (LIGHT_WORKERS_PER_OWNER + 1)
        for client in callers:
            await client.close()
        await check_counts(http, server, keys, per_owner, rooms_per_owner, len(listed))
        for k in keys.values():
            for w in k.workers:
                await w.close()


async def check_counts(http: aiohttp.ClientSession, server: ServerProcess, keys: dict[str, Key],
                       per_owner: int, rooms_per_owner: int, workers: int) -> None:
    """Usage, the event log and /metrics add up to the same counts."""
    prod = keys[""]
    total = per_owner * len(OWNERS)
    created = await events(http, server, prod, "dispatch.created")
    assert Counter(e.get("owner", "") for e in created) == {o: per_owner for o in OWNERS}

    async def usage_complete() -> bool:
        totals = (await get(http, server, "/usage?since=1d", prod))["totals"]
        return sum(t["agent_sessions"] for t in totals.values()) == total and all(
            totals[o or "production"]["participant_sessions"] == rooms_per_owner for o in OWNERS)

    await wait_for(usage_complete, timeout_s=20)
    totals = (await get(http, server, "/usage?since=1d", prod))["totals"]
    left = await events(http, server, prod, "participant.left")
    for owner in OWNERS:
        row = totals[owner or "production"]
        assert row["dispatches"] == row["agent_sessions"] == per_owner, row
        assert row["participant_sessions"] == sum(e.get("owner", "") == owner for e in left)
        assert (row["participant_ms"] > 0) == (rooms_per_owner > 0)
    out = ok(await acb("usage", "--since", "1d", *creds(server, prod.key, prod.secret)))
    assert "jack" in out and "jill" in out and "production" in out

    text = await metrics(http, server, project_token(prod.key, prod.secret))
    assert sample(text, "callboard_dispatches_created_total", project="team") == total
    assert sample(text, "callboard_jobs", project="team", state="success") == total
    assert sample(text, "callboard_workers", project="team") == workers
    assert sample(text, "callboard_dispatch_latency_seconds_count", project="team") == total
    assert 'project="dev"' not in text  # a project token sees its own project only
    everything = await metrics(http, server, "dev-admin")
    assert 'project="dev"' in everything and 'project="team"' in everything


async def test_one_agent_name_three_owners_zero_crosstalk(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """150 dispatches (API and CLI) across production, jack and jill; runs anywhere."""
    started = time.monotonic()
    monkeypatch.setenv("HOME", str(tmp_path))
    await exercise(server, http, tmp_path, rooms_per_owner=0)
    assert time.monotonic() - started < 60


@needs_netns
async def test_dispatches_and_token_rooms_mixed_across_owners(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's scenario: 150 dispatches plus 30 rooms created by real SDK token joins."""
    started = time.monotonic()
    monkeypatch.setenv("HOME", str(tmp_path))
    await exercise(server, http, tmp_path, rooms_per_owner=ROOMS_PER_OWNER)
    assert time.monotonic() - started < 60


async def test_bad_input_never_crosses_owners_or_projects(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    keys = team(server)
    other = team(server, "other")
    jack, jill = keys["jack"], keys["jill"]

    # jack's key registers a worker in jack's project, never in another: the project comes from
    # the key, so "other" never sees it and its dispatches for the same agent name wait
    worker = await light_worker(http, server, key=jack.key, secret=jack.secret,
                                proto=FinishingWorker(agent_name=AGENT))
    assert (await get(http, server, "/workers", other["jack"]))["workers"] == []
    (listed,) = (await get(http, server, "/workers", jill))["workers"]
    assert listed["developer"] == "jack"
    (waiting,) = await dispatch_api(server, other["jack"], ["r1"])
    explained = await get(http, server, f"/dispatches/{waiting}/explain", other["jack"])
    assert explained["jobs"][0]["state"] == "pending"

    # a token signed with jack's secret claiming jill (as issuer, or as a claim) gets nowhere
    now = int(time.time())
    forged = jwt.encode({"iss": jill.key, "sub": "x", "nbf": now, "exp": now + 60,
                         "video": {"roomAdmin": True}}, jack.secret, algorithm="HS256")
    async with http.get(f"{server.http_url}/callboard/v1/workers",
                        headers={"Authorization": f"Bearer {forged}"}) as resp:
        assert resp.status == 401
    claimed = jwt.encode({"iss": jack.key, "sub": "x", "nbf": now, "exp": now + 60,
                          "developer": "jill", "owner": "jill",
                          "video": {"roomAdmin": True, "roomCreate": True}},
                         jack.secret, algorithm="HS256")
    async with http.post(
        f"{server.http_url}/twirp/livekit.AgentDispatchService/CreateDispatch",
        json={"agent_name": AGENT, "room": "claimed"},
        headers={"Authorization": f"Bearer {claimed}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        made = await resp.json()
    explained = await get(http, server, f"/dispatches/{made['id']}/explain", jack)
    assert explained["developer"] == "jack"
    await worker.next("assignment")  # jack's dispatch went to jack's worker

    # logs, usage, crosstalk and metrics of "team" are invisible to "other"
    assert await events(http, server, other[""], "dispatch.") != []
    team_ids = {e["dispatch_id"] for e in await events(http, server, keys[""], "dispatch.")}
    other_ids = {e["dispatch_id"] for e in await events(http, server, other[""], "dispatch.")}
    assert team_ids and other_ids and not team_ids & other_ids
    other_usage = (await get(http, server, "/usage", other[""]))["totals"]
    assert "jack" in other_usage or other_usage == {}  # its own dispatch only, never team's
    text = await metrics(http, server, project_token(other[""].key, other[""].secret))
    assert 'project="team"' not in text and 'project="other"' in text

    # a revoked developer key: its connected workers are closed at once
    status, _ = admin(server, "DELETE", f"/keys/{jack.key}")
    assert status == 200
    await wait_for(lambda: worker.close_code is not None, timeout_s=5)
    assert worker.close_code == 1008
    async with http.get(f"{server.http_url}/callboard/v1/usage",
                        headers={"Authorization": f"Bearer {project_token(jack.key, jack.secret)}"
                                 }) as resp:
        assert resp.status == 401
    await worker.close()


async def test_two_projects_with_identical_names_see_nothing_of_each_other(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    a, b = team(server, "alpha")[""], team(server, "beta")[""]
    wa = await light_worker(http, server, key=a.key, secret=a.secret,
                            proto=FinishingWorker(agent_name=AGENT))
    wb = await light_worker(http, server, key=b.key, secret=b.secret,
                            proto=FinishingWorker(agent_name=AGENT))
    (da,) = await dispatch_api(server, a, ["same-room"])
    (db,) = await dispatch_api(server, b, ["same-room"])
    ja = (await wa.next("assignment")).assignment.job
    jb = (await wb.next("assignment")).assignment.job
    assert (ja.dispatch_id, jb.dispatch_id) == (da, db)
    for mine, _theirs, worker in ((a, b, wb), (b, a, wa)):
        seen = await get(http, server, "/workers", mine)
        assert worker.proto.worker_id not in {w["id"] for w in seen["workers"]}
        for e in await events(http, server, mine, ""):
            assert e.get("worker_id") != worker.proto.worker_id
            assert e.get("dispatch_id") not in ((db,) if mine is a else (da,))
        status, body = await project_get(http, server, f"/dispatches/{db if mine is a else da}"
                                         "/explain", mine.key, mine.secret)
        assert status == 404, body
        assert (await get(http, server, "/crosstalk", mine))["crosstalk"] == []

    async def counted(k: Key) -> bool:
        totals = (await get(http, server, "/usage", k))["totals"]
        return bool(totals.get("production", {}).get("agent_sessions") == 1)

    await wait_for(lambda: counted(a))
    await wait_for(lambda: counted(b))
    for worker in (wa, wb):
        await worker.close()

