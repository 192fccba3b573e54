"""The periodic retention sweep in a running server: an agent log line stamped 60 days ago (its
OTLP timestamp) goes at the next sweep; today's stays."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from livekit import api
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1 import logs_pb2

from tests.support.clients import project_get, wait_for
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess

DAY_NS = 86_400 * 10**9


@pytest.fixture
def sweeping(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(db=tmp_path / "sweep.db", env={
        "CALLBOARD_RETENTION_SWEEP_INTERVAL_S": "0.5", "CALLBOARD_RETENTION_EVENTS_DAYS": "30"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_old_event_lines_are_swept(sweeping: ServerProcess,
                                         http: aiohttp.ClientSession) -> None:
    records = [logs_pb2.LogRecord(time_unix_nano=time.time_ns() - days * DAY_NS,
                                  body=AnyValue(string_value=f"{days} days ago"))
               for days in (60, 0)]
    body = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        scope_logs=[logs_pb2.ScopeLogs(log_records=records)])]).SerializeToString()
    token = (api.AccessToken(DEV_KEY, DEV_SECRET)
             .with_observability_grants(api.ObservabilityGrants(write=True)).to_jwt())
    async with http.post(f"{sweeping.http_url}/observability/logs/otlp/v0", data=body,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/x-protobuf"}) as resp:
        assert resp.status == 200

    async def messages() -> list[str]:
        _, out = await project_get(http, sweeping, "/events?kind=agent.log")
        return [e["message"] for e in out["events"]]

    await wait_for(lambda: _is(messages(), ["0 days ago"]), timeout_s=10)
    await wait_for(lambda: "retention sweep deleted 1 events" in sweeping.log())


async def _is(found: object, expected: list[str]) -> bool:
    assert hasattr(found, "__await__")
    return await found == expected  # type: ignore[no-any-return]
