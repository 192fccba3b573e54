"""The server SIGKILLed and restarted while real livekit-agents jobs run: nothing is lost or rerun.

livekit-agents 1.8.9 reconnects by itself (retry delays 0 s, 2 s, 4 s, … capped at 10 s) and,
right after the new `register`, sends `migrate_job` with the ids of the jobs it still runs
(`AgentServer._report_active_jobs`). callboard restores the jobs recorded as running, waits the
grace window for them, and hands them to the re-registered worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from livekit import api
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from tests.support.agents import AgentFleet, explain, wait_all_ended, wait_jobs
from tests.support.clients import wait_for
from tests.support.server import ServerProcess

pytestmark = pytest.mark.compat


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # The SDK's second reconnect attempt comes 2 s after the first failed one, the next 4 s later:
    # a grace window longer than that keeps this test about migration, not about timer races.
    proc = ServerProcess(db=tmp_path / "callboard.db", env={"CALLBOARD_REDISPATCH_GRACE_S": "15"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_server_killed_mid_job_keeps_running_jobs_and_every_dispatch(
    server: ServerProcess, http: aiohttp.ClientSession, fleet: AgentFleet, lk: api.LiveKitAPI
) -> None:
    agent = fleet.start("keeper", hold=True)
    await fleet.wait_registered(http)
    first_worker = agent.worker_id

    running = [await lk.agent_dispatch.create_dispatch(
        CreateAgentDispatchRequest(agent_name="keeper", room=f"keep-{i}", metadata=str(i)))
        for i in range(3)]
    waiting = [await lk.agent_dispatch.create_dispatch(
        CreateAgentDispatchRequest(agent_name="nobody-yet", room=f"wait-{i}")) for i in range(2)]
    await wait_jobs([agent], [3])
    job_of = {r["dispatch_id"]: r["job_id"] for r in agent.jobs()}
    assert set(job_of) == {d.id for d in running}

    async def all_running() -> bool:
        bodies = [await explain(http, server, d.id) for d in running]
        return all(b["jobs"][0]["state"] == "running" for b in bodies)

    await wait_for(all_running, timeout_s=15)

    server.kill()
    killed_at = time.monotonic()
    server.start()
    restarted_s = time.monotonic() - killed_at

    async def migrated() -> bool:
        if len(agent.registrations()) < 2:
            return False
        listed = await fleet.listed(http)
        worker = listed.get(agent.worker_id or "")
        return worker is not None and sorted(worker["jobs"]) == sorted(job_of.values())

    try:
        await wait_for(migrated, timeout_s=30, interval_s=0.1)
    except AssertionError:
        raise AssertionError(f"jobs not migrated\n{agent.describe()}\n{server.log()[-4000:]}") \
            from None
    migrated_s = time.monotonic() - killed_at
    print(f"server back after {restarted_s:.2f}s, jobs migrated {migrated_s:.2f}s after SIGKILL")
    assert agent.worker_id != first_worker  # a new connection, a new worker id

    for d in running:
        body = await explain(http, server, d.id)
        [job] = body["jobs"]
        assert (job["job_id"], job["attempt"], job["state"]) == (job_of[d.id], 1, "running")
        assert job["worker_id"] == agent.worker_id
        whats = [t["what"] for t in body["trace"]]
        assert "migrated" in whats, whats
        assert "redispatched" not in whats, whats

    # Every acknowledged dispatch is still listed, with the same job ids.
    for d in [*running, *waiting]:
        [listed] = await lk.agent_dispatch.list_dispatch(d.room)
        assert (listed.id, listed.agent_name, listed.metadata) == (d.id, d.agent_name, d.metadata)
        assert [j.id for j in listed.state.jobs] == [j.id for j in d.state.jobs]
    for d in waiting:
        [job] = (await explain(http, server, d.id))["jobs"]
        assert job["state"] == "pending"

    agent.release()
    await wait_all_ended(http, server, [d.id for d in running])
    await wait_for(lambda: len([r for r in agent.records() if r["event"] == "released"]) == 3)
    # The entrypoint ran once per job: the restart started no second agent.
    assert sorted(agent.job_ids()) == sorted(job_of.values())


async def test_job_that_ends_while_the_server_is_down_is_recorded_once(
    server: ServerProcess, http: aiohttp.ClientSession, fleet: AgentFleet, lk: api.LiveKitAPI
) -> None:
    """While disconnected the SDK queues the job's `update_job(JS_SUCCESS)`; on the new connection
    it goes out right after `register` and before `migrate_job` (which lists only jobs still
    running). callboard must take that late word for the job, not fail and re-dispatch it."""
    agent = fleet.start("keeper", hold=True)
    await fleet.wait_registered(http)
    dispatches = [await lk.agent_dispatch.create_dispatch(
        CreateAgentDispatchRequest(agent_name="keeper", room=f"keep-{i}")) for i in range(2)]
    await wait_jobs([agent], [2])
    job_of = {r["dispatch_id"]: r["job_id"] for r in agent.jobs()}
    ends_offline, keeps_running = dispatches

    async def all_running() -> bool:
        bodies = [await explain(http, server, d.id) for d in dispatches]
        return all(b["jobs"][0]["state"] == "running" for b in bodies)

    await wait_for(all_running, timeout_s=15)

    server.kill()
    agent.release(job_of[ends_offline.id])

    async def one_left() -> bool:
        return await agent.active_jobs(http) == 1

    await wait_for(one_left, timeout_s=15)  # the SDK has finished the job and queued its status
    server.start()

    ended = await wait_all_ended(http, server, [ends_offline.id], timeout_s=25)
    [job] = ended[ends_offline.id]["jobs"]
    assert (job["job_id"], job["attempt"]) == (job_of[ends_offline.id], 1), ended
    [still] = (await explain(http, server, keeps_running.id))["jobs"]
    assert (still["state"], still["worker_id"]) == ("running", agent.worker_id), still

    agent.release()
    await wait_all_ended(http, server, [keeps_running.id])
    assert sorted(agent.job_ids()) == sorted(job_of.values())  # no job ran twice
