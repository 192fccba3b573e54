"""The real livekit-agents SDK (1.8.9) and livekit-api against a real callboard server.

Each worker is a real `AgentServer` in its own process (tests/support/agent_worker.py); what its
entrypoint saw (`ctx.job`) comes back through a JSON-lines file, and what callboard recorded comes
from the project API (`/workers`, `/dispatches/<id>/explain`) and Twirp ListDispatch.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import pytest
from livekit import api
from livekit.protocol.agent import JobStatus
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest
from livekit.protocol.room import CreateRoomRequest

from tests.support.agents import (
    AgentFleet,
    dispatch_many,
    explain,
    wait_all_ended,
    wait_jobs,
)
from tests.support.clients import lk_api, new_project, wait_for
from tests.support.server import ServerProcess

pytestmark = pytest.mark.compat

# --------------------------------------------------------------------------------------------------


async def test_user_story_named_worker_runs_explicit_dispatch(
    server: ServerProcess, http: aiohttp.ClientSession, fleet: AgentFleet, lk: api.LiveKitAPI
) -> None:
    agent = fleet.start("my-agent")
    await fleet.wait_registered(http)

    created = await lk.agent_dispatch.create_dispatch(
        CreateAgentDispatchRequest(agent_name="my-agent", room="room-1", metadata="m"))
    await wait_jobs([agent], [1])

    [listed] = await lk.agent_dispatch.list_dispatch("room-1")
    assert listed.id == created.id
    [job] = listed.state.jobs
    [run] = agent.jobs()
    assert {k: run[k] for k in ("job_id", "room", "agent_name", "metadata", "dispatch_id")} == {
        "job_id": job.id, "room": "room-1", "agent_name": "my-agent", "metadata": "m",
        "dispatch_id": created.id,
    }
    assert job.id.startswith("AJ_")

    body = (await wait_all_ended(http, server, [created.id]))[created.id]
    [rec] = body["jobs"]
    assert rec["job_id"] == job.id and rec["worker_id"] == agent.worker_id
    assert rec["participant_identity"] == f"agent-{job.id}"
    whats = [t["what"] for t in body["trace"]]
    assert whats.index("offered") < whats.index("assigned") < whats.index("ended")

    # ListDispatch reports the end the worker sent (update_job JS_SUCCESS) too.
    [listed] = await lk.agent_dispatch.list_dispatch("room-1")
    assert listed.state.jobs[0].state.status == JobStatus.JS_SUCCESS
    assert listed.state.jobs[0].state.worker_id == agent.worker_id
    assert len(agent.jobs()) == 1, agent.jobs()


async def test_named_developer_workers_and_automatic_dispatch_never_cross(
    server: ServerProcess, http: aiohttp.ClientSession, fleet: AgentFleet, lk: api.LiveKitAPI
) -> None:
    jack = fleet.start("my-agent-jack")
    jill = fleet.start("my-agent-jill")
    unnamed = fleet.start("")
    await fleet.wait_registered(http)

    to_jack, to_jill = await asyncio.gather(
        dispatch_many(lk, "my-agent-jack", [f"jack-{i}" for i in range(10)]),
        dispatch_many(lk, "my-agent-jill", [f"jill-{i}" for i in range(10)]),
    )
    room = await lk.room.create_room(CreateRoomRequest(name="auto-room"))
    assert room.name == "auto-room"
    await wait_jobs([jack, jill, unnamed], [10, 10, 1])

    [auto] = await lk.agent_dispatch.list_dispatch("auto-room")
    assert auto.agent_name == ""
    ended = await wait_all_ended(http, server, [d.id for d in [*to_jack, *to_jill, auto]])

    for worker, dispatches, name in ((jack, to_jack, "my-agent-jack"),
                                     (jill, to_jill, "my-agent-jill"), (unnamed, [auto], "")):
        runs = worker.jobs()
        assert sorted(r["dispatch_id"] for r in runs) == sorted(d.id for d in dispatches), worker
        assert {r["agent_name"] for r in runs} == {name}
        for d in dispatches:
            [rec] = ended[d.id]["jobs"]
            assert rec["worker_id"] == worker.worker_id, (name, ended[d.id])
    [auto_run] = unnamed.jobs()
    assert auto_run["room"] == "auto-room"
    assert ended[auto.id]["source"] == "room"


async def test_load_weighted_selection_with_pinned_load_functions(
    server: ServerProcess, http: aiohttp.ClientSession, fleet: AgentFleet, lk: api.LiveKitAPI
) -> None:
    loads = (0.1, 0.4, 0.6)
    workers = [fleet.start("balanced", load=load) for load in loads]
    await fleet.wait_registered(http)

    async def loads_reported() -> bool:
        listed = await fleet.listed(http)
        return all(listed[w.worker_id]["load"] == w.load for w in workers if w.worker_id)

    await wait_for(loads_reported, timeout_s=15)

    n = 300
    started = time.monotonic()
    dispatches = await dispatch_many(lk, "balanced", [f"bal-{i}" for i in range(n)])
    created_s = time.monotonic() - started
    await wait_for(lambda: sum(len(w.jobs()) for w in workers) >= n, timeout_s=60)
    ran_s = time.monotonic() - started
    await wait_all_ended(http, server, [d.id for d in dispatches], timeout_s=60)

    runs = [r for w in workers for r in w.jobs()]
    assert len(runs) == n and len({r["job_id"] for r in runs}) == n
    assert {r["dispatch_id"] for r in runs} == {d.id for d in dispatches}
    observed = [len(w.jobs()) for w in workers]
    weights = [1 - load for load in loads]
    expected = [n * w / sum(weights) for w in weights]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    print(f"observed={observed} expected={[round(e, 1) for e in expected]} chi2={chi2:.2f} "
          f"create={created_s:.2f}s run={ran_s:.2f}s")
    # chi-square, 2 degrees of freedom: P(X > 13.816) = 0.001
    assert chi2 < 13.816, (observed, expected, chi2)
    # The ordering alone would already be suspicious if wrong.
    assert observed[0] > observed[2], observed


async def test_dispatch_created_before_any_worker_runs_when_it_registers(
    server: ServerProcess, http: aiohttp.ClientSession, fleet: AgentFleet, lk: api.LiveKitAPI
) -> None:
    early = await lk.agent_dispatch.create_dispatch(
        CreateAgentDispatchRequest(agent_name="late-agent", room="early-room", metadata="early"))
    body = await explain(http, server, early.id)
    [job] = body["jobs"]
    assert job["state"] == "pending" and job["worker_id"] == ""
    queued = [t for t in body["trace"] if t["what"] == "queued"]
    assert queued and "no worker registered" in queued[0]["detail"]["why"], body["trace"]

    agent = fleet.start("late-agent")
    # No wait for registration: the pending queue hands the job over as soon as it registers.
    await wait_jobs([agent], [1])
    [run] = agent.jobs()
    assert (run["job_id"], run["room"], run["metadata"], run["dispatch_id"]) == (
        job["job_id"], "early-room", "early", early.id)
    ended = await wait_all_ended(http, server, [early.id])
    assert ended[early.id]["jobs"][0]["worker_id"] == agent.worker_id


async def test_a_lone_worker_that_declined_is_asked_again_when_it_reports_available(
    server: ServerProcess, http: aiohttp.ClientSession, fleet: AgentFleet, lk: api.LiveKitAPI
) -> None:
    """livekit-agents declines a job it cannot take now (its load, or the agent's own request
    handler) without ever reporting FULL; its periodic status report brings the job back."""
    agent = fleet.start("moody-agent", decline=1)
    await fleet.wait_registered(http, [agent])
    started = time.monotonic()
    made = await lk.agent_dispatch.create_dispatch(
        CreateAgentDispatchRequest(agent_name="moody-agent", room="moody-room"))
    await wait_jobs([agent], [1], timeout_s=30)
    assert time.monotonic() - started < 20  # a few status reports, not the 10 min pending TTL
    assert [r["event"] for r in agent.records() if r["event"] in ("declined", "job")] == [
        "declined", "job"]
    whats = [t["what"] for t in (await explain(http, server, made.id))["trace"]]
    assert whats.index("declined") < whats.index("queued") < whats.index("retry") < whats.index(
        "assigned"), whats


async def test_developer_key_dispatches_reach_only_that_developers_worker(
    server: ServerProcess, http: aiohttp.ClientSession, fleet: AgentFleet
) -> None:
    jack_key, jack_secret = new_project(server, "team", developer="jack")
    prod_key, prod_secret = new_project(server, "team")
    prod = fleet.start("my-agent", key=prod_key, secret=prod_secret)
    jack = fleet.start("my-agent", key=jack_key, secret=jack_secret)
    await fleet.wait_registered(http)

    listed = await fleet.listed(http, prod_key, prod_secret)
    assert listed[prod.worker_id]["developer"] == ""
    assert listed[jack.worker_id]["developer"] == "jack"

    async with lk_api(server, jack_key, jack_secret) as as_jack, \
            lk_api(server, prod_key, prod_secret) as as_prod:
        by_jack, by_prod = await asyncio.gather(
            dispatch_many(as_jack, "my-agent", [f"dev-{i}" for i in range(10)]),
            dispatch_many(as_prod, "my-agent", [f"prod-{i}" for i in range(10)]),
        )
    await wait_jobs([prod, jack], [10, 10])
    ended = await wait_all_ended(http, server, [d.id for d in [*by_jack, *by_prod]],
                                 prod_key, prod_secret)

    assert sorted(r["dispatch_id"] for r in jack.jobs()) == sorted(d.id for d in by_jack)
    assert sorted(r["dispatch_id"] for r in prod.jobs()) == sorted(d.id for d in by_prod)
    for d in by_jack:
        assert ended[d.id]["developer"] == "jack"
        assert ended[d.id]["jobs"][0]["worker_id"] == jack.worker_id
    for d in by_prod:
        assert ended[d.id]["developer"] == ""
        assert ended[d.id]["jobs"][0]["worker_id"] == prod.worker_id
    assert Counter(r["agent_name"] for r in [*jack.jobs(), *prod.jobs()]) == {"my-agent": 20}
