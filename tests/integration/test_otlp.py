"""Agent log uploads (livekit-wire §11): a real, unmodified livekit-agents worker with
LIVEKIT_OBSERVABILITY_URL pointing at callboard logs a line in its job, and `callboard logs --job`
shows it. Plus the upload endpoints' authentication and scoping with hand-made OTLP requests."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api
from livekit.protocol import metrics as lk_metrics
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2

from tests.support.clients import lk_api, new_project, project_get, wait_for
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess
from tests.support.worker_procs import stop_process, worker_env

WORKER = textwrap.dedent(
    """
    import asyncio, logging, sys, warnings
    warnings.simplefilter("ignore")
    from livekit.agents import AgentServer, JobContext, JobExecutorType

    logging.basicConfig(level=logging.INFO, filename=sys.argv[2])
    server = AgentServer(job_executor_type=JobExecutorType.THREAD, num_idle_processes=0,
                         host="127.0.0.1", port=0)

    @server.rtc_session(agent_name=sys.argv[1])
    async def entrypoint(ctx: JobContext) -> None:
        logging.getLogger("my-agent").warning("hello from the agent, job %s", ctx.job.id)
        ctx.shutdown(reason="done")

    asyncio.run(server.run(devmode=True))
    """
)


@pytest.fixture
def agent(server: ServerProcess, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = tmp_path / "otlp_agent.py"
    script.write_text(WORKER)
    env = worker_env(server, DEV_KEY, DEV_SECRET) | {"LIVEKIT_OBSERVABILITY_URL": server.http_url}
    log = tmp_path / "agent.log"
    with open(tmp_path / "agent.stderr", "ab") as err:
        proc = subprocess.Popen([sys.executable, str(script), "otlp-agent", str(log)], env=env,
                                stdout=err, stderr=err, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_process(proc, 8)


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLBOARD_"))}
    env |= {"CALLBOARD_URL": server.http_url, "CALLBOARD_API_KEY": DEV_KEY,
            "CALLBOARD_API_SECRET": DEV_SECRET, "HOME": str(server.db.parent)}
    return subprocess.run([sys.executable, "-m", "callboard.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=30)


async def test_real_agent_log_line_reaches_callboard_logs(
    server: ServerProcess, agent: subprocess.Popen[bytes], http: aiohttp.ClientSession
) -> None:
    async with lk_api(server) as lk:
        dispatch = await lk.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="otlp-agent", room="otlp-room"))

    async def job_id() -> str:
        _status, body = await project_get(http, server, f"/dispatches/{dispatch.id}/explain")
        jobs = body.get("jobs", [])
        return str(jobs[0]["job_id"]) if jobs and jobs[0]["state"] == "success" else ""

    await wait_for(job_id, timeout_s=45)
    job = await job_id()

    async def logged() -> list[dict[str, Any]]:
        _status, body = await project_get(http, server, f"/events?job={job}&kind=agent.log")
        return [e for e in body["events"] if "hello from the agent" in e["message"]]

    await wait_for(logged, timeout_s=20)
    (line,) = await logged()
    assert line["room_name"] == "otlp-room" and line["agent_name"] == "otlp-agent"
    assert line["level"] == "warning" and job in line["message"]
    out = cli(server, "logs", "--job", job)
    assert out.returncode == 0, out.stderr
    assert "hello from the agent" in out.stdout


def otlp_logs(job_id: str, text: str) -> bytes:
    record = logs_pb2.LogRecord(
        time_unix_nano=time.time_ns(), severity_number=logs_pb2.SEVERITY_NUMBER_INFO,
        body=AnyValue(string_value=text),
        attributes=[KeyValue(key="job_id", value=AnyValue(string_value=job_id))])
    req = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        scope_logs=[logs_pb2.ScopeLogs(log_records=[record])])])
    return gzip.compress(req.SerializeToString())


def obs_token(key: str, secret: str, write: bool = True) -> str:
    token = api.AccessToken(key, secret)
    if write:
        token = token.with_observability_grants(api.ObservabilityGrants(write=True))
    return token.to_jwt()


async def post(http: aiohttp.ClientSession, server: ServerProcess, path: str, body: Any,
               token: str, **headers: str) -> int:
    async with http.post(f"{server.http_url}/observability/{path}", data=body,
                         headers={"Authorization": f"Bearer {token}", **headers}) as resp:
        await resp.read()
        return resp.status


async def test_uploads_are_scoped_to_the_key_and_need_the_grant(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    b_key, b_secret = new_project(server, "other", developer="jill")
    body = otlp_logs("AJ_notours", "from project b")
    gz = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    assert await post(http, server, "logs/otlp/v0", body, obs_token(b_key, b_secret),
                      **gz) == 200
    assert await post(http, server, "logs/otlp/v0", body, obs_token(b_key, b_secret, False),
                      **gz) == 403
    assert await post(http, server, "logs/otlp/v0", body, "not-a-jwt", **gz) == 401
    assert await post(http, server, "logs/otlp/v0", b"\x00garbage", obs_token(DEV_KEY,
                      DEV_SECRET), **{"Content-Type": "application/x-protobuf"}) == 400

    async def lines(key: str, secret: str) -> list[dict[str, Any]]:
        _status, out = await project_get(http, server, "/events?kind=agent.", key, secret)
        return list(out["events"])

    await wait_for(lambda: lines(b_key, b_secret))
    (line,) = await lines(b_key, b_secret)
    assert line["owner"] == "jill" and line["message"] == "from project b"
    assert await lines(DEV_KEY, DEV_SECRET) == []

    header = lk_metrics.MetricsRecordingHeader(job_id="AJ_x", duration=1500)
    form = aiohttp.FormData()
    form.add_field("header", header.SerializeToString(), filename="header.binpb",
                   content_type="application/protobuf")
    form.add_field("chat_history", "[]", filename="chat_history.json",
                   content_type="application/json")
    assert await post(http, server, "recordings/v0", form, obs_token(b_key, b_secret)) == 200

    async def reports() -> list[dict[str, Any]]:
        return [e for e in await lines(b_key, b_secret) if e["kind"] == "agent.session_report"]

    await wait_for(reports)
    assert await lines(DEV_KEY, DEV_SECRET) == []
