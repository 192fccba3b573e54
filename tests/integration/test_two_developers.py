"""Two developers, one server, no crosstalk — the README's three ways, each with real agents.

jack and jill run the example echo agent (real livekit-agents workers) against one callboard
server and place calls with the real `callboard call`:

1. by suffix: one project key, LIVEKIT_AGENT_SUFFIX=jack / jill (agents echo-agent-jack/-jill);
2. by separate projects: each has a project of their own (same agent name in both), added with
   `callboard project add` and handed to the agent with `callboard env`;
3. by developer keys: one project, a developer key each, the same agent name.

Every call must be answered by the caller's own worker, and the other worker must see no job.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.support.calls import CallResult, place_call
from tests.support.cli import creds, run_exe
from tests.support.clients import admin, new_project
from tests.support.echo_agents import EchoAgent, echo_fleet
from tests.support.rtc import needs_netns
from tests.support.server import ServerProcess

pytestmark = needs_netns

SUFFIX_CALLS = int(os.environ.get("CALLBOARD_TWO_DEV_CALLS", "20"))


def answered_by(result: CallResult, agent: EchoAgent) -> None:
    assert result.rc == 0, result.describe() + "\n" + agent.describe()
    assert result.body["answered_by"]["worker_id"] == agent.worker_id, result.body
    assert result.body["replies"][0]["text"] == "echo: hi"


async def test_by_suffix_jacks_calls_always_reach_jacks_worker(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with echo_fleet(server, tmp_path / "agents") as fleet:
        jack = fleet.start(suffix="jack")
        jill = fleet.start(suffix="jill")
        await fleet.wait_registered(http)
        rooms = []
        for _ in range(SUFFIX_CALLS):
            result = place_call(tmp_path, *creds(server), "--message", "hi", "--expect-reply",
                                "--timeout", "30", suffix="jack")
            answered_by(result, jack)
            assert result.body["agent_name"] == "echo-agent-jack"
            rooms.append(result.body["room"])
        jills = place_call(tmp_path, *creds(server), "--message", "hi", "--expect-reply",
                           suffix="jill")
        answered_by(jills, jill)
    assert sorted(j["room"] for j in jack.jobs()) == sorted(rooms)
    assert [j["room"] for j in jill.jobs()] == [jills.body["room"]]


def project_add(home: Path, name: str, server: ServerProcess, key: str, secret: str) -> None:
    done = run_exe("project", "add", name, "--url", server.ws_url, "--api-key", key,
                   "--api-secret", secret, home=home)
    assert done.returncode == 0, done.stderr


def env_of(home: Path, project: str, tmp_path: Path) -> dict[str, str]:
    """What `callboard env --project P --write FILE` writes, read back as a dict."""
    dotenv = tmp_path / f"{project}.env"
    dotenv.write_text("# mine\nOTHER=1\n")
    done = run_exe("env", "--project", project, "--write", str(dotenv), home=home)
    assert done.returncode == 0, done.stderr
    lines = dotenv.read_text().splitlines()
    assert lines[:2] == ["# mine", "OTHER=1"]
    return dict(line.split("=", 1) for line in lines[1:])


async def test_by_separate_projects(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    homes = {name: tmp_path / f"home-{name}" for name in ("jack", "jill")}
    for name, home in homes.items():
        home.mkdir()
        key, secret = new_project(server, f"{name}-app", "")
        project_add(home, name, server, key, secret)
    keys = {name: env_of(home, name, tmp_path) for name, home in homes.items()}
    assert keys["jack"]["LIVEKIT_URL"] == server.ws_url
    with echo_fleet(server, tmp_path / "agents") as fleet:
        jack = fleet.start(key=keys["jack"]["LIVEKIT_API_KEY"],
                           secret=keys["jack"]["LIVEKIT_API_SECRET"])
        jill = fleet.start(key=keys["jill"]["LIVEKIT_API_KEY"],
                           secret=keys["jill"]["LIVEKIT_API_SECRET"])
        await fleet.wait_registered(http)
        for _ in range(3):
            answered_by(place_call(homes["jack"], "--project", "jack", "--message", "hi",
                                   "--expect-reply"), jack)
        answered_by(place_call(homes["jill"], "--project", "jill", "--message", "hi",
                               "--expect-reply"), jill)
    assert len(jack.jobs()) == 3 and len(jill.jobs()) == 1


async def test_by_developer_keys(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    devs = {}
    for name in ("jack", "jill"):
        status, body = admin(server, "POST", "/projects/dev/keys", {"developer": name})
        assert status == 201, body
        devs[name] = (body["key"], body["secret"])
    with echo_fleet(server, tmp_path / "agents") as fleet:
        jack = fleet.start(key=devs["jack"][0], secret=devs["jack"][1])
        jill = fleet.start(key=devs["jill"][0], secret=devs["jill"][1])
        await fleet.wait_registered(http)
        for _ in range(3):  # no --agent: the one agent name jack's key serves
            result = place_call(tmp_path, *creds(server, *devs["jack"]), "--message", "hi",
                                "--expect-reply")
            answered_by(result, jack)
            assert result.body["answered_by"]["developer"] == "jack"
        result = place_call(tmp_path, *creds(server, *devs["jill"]), "--message", "hi",
                            "--expect-reply")
        answered_by(result, jill)
        assert result.body["answered_by"]["developer"] == "jill"
    assert len(jack.jobs()) == 3 and len(jill.jobs()) == 1


