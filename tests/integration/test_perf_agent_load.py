"""`callboard perf agent-load-test` against real echo workers serving one agent name.

The report's counts (joined, answered, jobs per worker) must match the jobs the workers
themselves saw, room for room. The workers use livekit-agents' process executor (warm processes):
with the thread executor, jobs that start together in one process share one rtc FFI, and on a
busy 2-core machine it gives up on a job's room ("timed out waiting for ReadyForRoomEventRequest
after ConnectCallback", and the worker dies) — a client-side limit, which the load test reports
as rooms whose agent joined but never answered.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.support.cli import creds, run_exe
from tests.support.echo_agents import echo_fleet
from tests.support.rtc import needs_netns
from tests.support.server import ServerProcess

pytestmark = needs_netns

ROOMS = 4


async def test_load_test_counts_match_the_jobs_the_workers_saw(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with echo_fleet(server, tmp_path / "agents") as fleet:
        agents = [fleet.start(processes=ROOMS // 2) for _ in range(2)]
        await fleet.wait_registered(http)
        done = run_exe("perf", "agent-load-test", *creds(server), "--rooms", str(ROOMS),
                       "--agent-name", "echo-agent", "--duration", "1s", "--timeout", "45",
                       "--room-prefix", "load", "--json", home=tmp_path, timeout_s=120)
        why = done.stdout + done.stderr + "".join(a.describe() for a in agents)
        assert done.returncode == 0, why
    report = json.loads(done.stdout)
    assert (report["rooms"], report["joined"], report["listed"], report["answered"],
            report["failed"]) == (ROOMS, ROOMS, ROOMS, ROOMS, 0)
    seen = {a.worker_id: sorted(j["room"] for j in a.jobs()) for a in agents}
    assert sum(len(rooms) for rooms in seen.values()) == ROOMS
    by_worker = {w: v["jobs"] for w, v in report["by_worker"].items()}
    assert by_worker == {w: len(rooms) for w, rooms in seen.items() if rooms}
    went: dict[str, list[str]] = {}
    for r in report["results"]:
        went.setdefault(r["answer"]["worker_id"], []).append(r["room"])
    assert {w: sorted(rooms) for w, rooms in went.items()} == {
        w: rooms for w, rooms in seen.items() if rooms}
    lat = report["join_latency_ms"]
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"]


async def test_load_test_without_an_agent_fails_each_room_and_says_why(
    server: ServerProcess, tmp_path: Path
) -> None:
    done = run_exe("perf", "agent-load-test", *creds(server), "--rooms", "2", "--agent-name",
                   "nobody", "--duration", "1s", "--timeout", "1.5", home=tmp_path,
                   timeout_s=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 rooms, 0 joined, 0 answered, 2 failed" in done.stdout
    assert done.stdout.count("no agent joined within 1.5 s") == 2
    assert "Traceback" not in done.stderr
