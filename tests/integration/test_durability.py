"""Workers that drop, servers that die: no record lost, no job run twice, none dropped silently."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
from livekit.api import TwirpError
from livekit.protocol import agent as pb
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

from callboard.client.worker import LightWorker, WorkerProtocol
from tests.support.clients import light_worker, lk_api, project_get, wait_for
from tests.support.server import DEV_SECRET, ServerProcess


async def _reconnect(
    http: aiohttp.ClientSession, server: ServerProcess, agent_name: str, job_ids: list[str]
) -> LightWorker:
    """What livekit-agents does after a drop: register again, then migrate_job its running jobs."""
    worker = await light_worker(http, server, agent_name)
    await worker.send(worker.proto.migrate(job_ids))
    return worker


async def test_worker_back_within_grace_keeps_its_job(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    first = await light_worker(http, server, "sticky")
    spare = await light_worker(http, server, "sticky", proto=WorkerProtocol("sticky"))
    async with lk_api(server) as lkapi:
        d = await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="sticky", room="grace-room")
        )
    holder_id = await _assigned_to(http, server, d.id)
    holder = first if first.proto.worker_id == holder_id else spare
    other = spare if holder is first else first
    job_id = (await holder.next("assignment")).assignment.job.id
    await holder.close()  # the connection drops
    back = await _reconnect(http, server, "sticky", [job_id])
    await wait_for(lambda: _job_worker(http, server, d.id, back.proto.worker_id))
    _, trace = await project_get(http, server, f"/dispatches/{d.id}/explain")
    assert [j["job_id"] for j in trace["jobs"]] == [job_id]  # no second job, no second agent
    assert trace["jobs"][0]["state"] == "running"
    assert "migrated" in [t["what"] for t in trace["trace"]]
    assert other.proto.offers == []
    await back.close()
    await other.close()


async def test_worker_that_never_returns_has_its_job_redispatched_once(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    gone = await light_worker(http, server, "fragile")
    async with lk_api(server) as lkapi:
        d = await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="fragile", room="lost-room")
        )
    first = (await gone.next("assignment")).assignment
    await gone.close()
    rescuer = await light_worker(http, server, "fragile")
    second = (await rescuer.next("assignment", timeout=15)).assignment  # after the 3 s grace
    assert second.job.dispatch_id == d.id and second.job.id != first.job.id
    claims = jwt.decode(second.token, DEV_SECRET, algorithms=["HS256"])
    assert claims["callboard"]["attempt"] == 2
    _, trace = await project_get(http, server, f"/dispatches/{d.id}/explain")
    states = {j["job_id"]: j["state"] for j in trace["jobs"]}
    assert states[first.job.id] == "failed" and states[second.job.id] in ("assigned", "running")
    assert "redispatched" in [t["what"] for t in trace["trace"]]
    await rescuer.close()


class _Mute(WorkerProtocol):
    """Says nothing of the jobs it takes, as livekit-agents does of one its process pool failed
    to start."""

    def receive(self, msg: pb.ServerMessage) -> list[pb.WorkerMessage]:
        replies = super().receive(msg)
        return [r for r in replies if r.WhichOneof("message") != "update_job"]


async def test_a_job_never_reported_running_is_stopped_and_dispatched_again(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = ServerProcess(db=tmp_path / "mute.db", env={"CALLBOARD_JOB_START_TIMEOUT_S": "2"})
    server.start()
    try:
        proto = _Mute("mute")
        proto.decide = lambda job: not proto.assignments  # its first job only
        mute = await light_worker(http, server, "mute", proto=proto)
        async with lk_api(server) as lkapi:
            d = await lkapi.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="mute", room="mute-room")
            )
        first = (await mute.next("assignment")).assignment
        healthy = await light_worker(http, server, "mute")
        started = time.monotonic()
        stop = (await mute.next("termination", timeout=10)).termination
        assert stop.job_id == first.job.id
        assert time.monotonic() - started < 5
        second = (await healthy.next("assignment", timeout=10)).assignment
        assert second.job.dispatch_id == d.id and second.job.id != first.job.id
        claims = jwt.decode(second.token, DEV_SECRET, algorithms=["HS256"])
        assert claims["callboard"]["attempt"] == 2
        await wait_for(lambda: _job_worker(http, server, d.id, healthy.proto.worker_id))
        _, trace = await project_get(http, server, f"/dispatches/{d.id}/explain")
        failed = trace["jobs"][0]
        assert (failed["job_id"], failed["state"]) == (first.job.id, "failed")
        assert failed["error"] == (
            f"worker {mute.proto.worker_id} did not report the job running within 2 s of its"
            " assignment"
        )
        _, log = await project_get(http, server, f"/events?job={first.job.id}")
        assert "job.failed" in [e["kind"] for e in log["events"]]
        # Its copy starting late is taken calmly: the worker stays connected.
        await mute.send(mute.proto.job_update(first.job.id, pb.JobStatus.JS_RUNNING))
        await mute.send(mute.proto.status(0.0))
        await asyncio.sleep(0.3)
        assert mute.ws is not None and not mute.ws.closed and mute.close_code is None
        await mute.close()
        await healthy.close()
    finally:
        server.stop()


def _writer_pid(server_pid: int) -> int:
    """The store's writer process: the server's child running `callboard.store.child`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"callboard.store.child" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no writer process under server {server_pid}")


async def test_a_store_that_fails_for_good_fails_calls_and_the_health_check(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """A writer process that dies seconds after starting is not replaced (it would die again):
    calls fail with an error instead of hanging, `GET /` says why, and the exit code is 1, for
    whatever supervises the server."""
    assert server.proc is not None
    os.kill(_writer_pid(server.proc.pid), signal.SIGKILL)

    async def unhealthy() -> bool:
        async with http.get(f"{server.http_url}/") as resp:
            return resp.status == 503 and "store failed" in await resp.text()

    await wait_for(unhealthy)
    worker = await light_worker(http, server, "any")
    async with lk_api(server) as lkapi:
        with pytest.raises(TwirpError) as err:
            await lkapi.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="any", room="no-store")
            )
        assert err.value.code == "internal"
        # Not acknowledged, so not left running (a retry must not bring a second agent): the
        # dispatch is gone, and the worker offered its job never holds it.
        assert await lkapi.agent_dispatch.list_dispatch("no-store") == []
    offered = (await worker.next("availability")).availability.job.id
    await worker.send(pb.WorkerMessage(ping=pb.WorkerPing(timestamp=7)))
    await worker.next("pong")  # frames arrive in order: whatever came before has been read
    assigned = {a.job.id for a in worker.proto.assignments}
    assert assigned <= set(worker.proto.terminations) and assigned <= {offered}
    _, workers = await project_get(http, server, "/workers")
    assert workers["workers"][0]["jobs"] == []
    await worker.close()
    assert server.proc.poll() is None  # the server itself stays up
    assert "store writer process exited" in server.log()
    assert server.stop() == 1  # SIGTERM: it stops, and says that the store had failed
    assert "stopped; the store had failed" in server.log()


async def test_server_killed_and_restarted_loses_no_record(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    worker = await light_worker(http, server, "durable")
    acknowledged = []
    async with lk_api(server) as lkapi:
        for i in range(25):
            d = await lkapi.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="durable", room=f"room-{i % 5}")
            )
            acknowledged.append(d.id)
        queued = await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="nobody-yet", room="room-q")
        )
    job_ids = [(await worker.next("assignment")).assignment.job.id for _ in range(25)]
    server.kill()  # SIGKILL: no drain, no flush
    await worker.close()
    server.start()
    async with lk_api(server) as lkapi:
        listed = set()
        for i in range(5):
            listed |= {x.id for x in await lkapi.agent_dispatch.list_dispatch(f"room-{i}")}
        assert listed == set(acknowledged)
        assert [x.id for x in await lkapi.agent_dispatch.list_dispatch("room-q")] == [queued.id]
    back = await _reconnect(http, server, "durable", job_ids)
    late = await light_worker(http, server, "nobody-yet")
    assert (await late.next("assignment")).assignment.job.dispatch_id == queued.id
    for dispatch_id in acknowledged[:3]:
        await wait_for(lambda d=dispatch_id: _job_worker(http, server, d, back.proto.worker_id))
    assert back.proto.offers == []  # resumed by migration, never offered again
    await back.close()
    await late.close()


async def test_an_assignment_ends_the_commit_window(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A dispatch is acknowledged once committed; an assigned one commits as soon as its
    assignment is out, while a queued one waits out the (here: long) group-commit window."""
    server = ServerProcess(db=tmp_path / "window.db",
                           env={"CALLBOARD_STORE_COMMIT_WINDOW_MS": "3000"})
    server.start()
    try:
        worker = await light_worker(http, server, "prompt")
        async with lk_api(server) as lkapi:
            started = time.monotonic()
            d = await lkapi.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="prompt", room="window-a")
            )
            assigned_s = time.monotonic() - started
            started = time.monotonic()
            await lkapi.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name="nobody", room="window-b")
            )
            queued_s = time.monotonic() - started
        assert (await worker.next("assignment")).assignment.job.dispatch_id == d.id
        assert assigned_s < 1.5, assigned_s
        assert queued_s >= 2.5, queued_s
        await worker.close()
    finally:
        server.stop()


async def _assigned_to(http: aiohttp.ClientSession, server: ServerProcess, dispatch_id: str) -> str:
    async def check() -> str:
        _, trace = await project_get(http, server, f"/dispatches/{dispatch_id}/explain")
        jobs = trace.get("jobs") or []
        return str(jobs[0]["worker_id"]) if jobs and jobs[0]["worker_id"] else ""

    result = ""

    async def ready() -> bool:
        nonlocal result
        result = await check()
        return bool(result)

    await wait_for(ready)
    return result


async def _job_worker(
    http: aiohttp.ClientSession, server: ServerProcess, dispatch_id: str, worker_id: str
) -> bool:
    _, trace = await project_get(http, server, f"/dispatches/{dispatch_id}/explain")
    return any(j["worker_id"] == worker_id and j["state"] == "running" for j in trace["jobs"])
