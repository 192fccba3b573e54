"""`callboard call` against the example echo agent run by a real livekit-agents worker.

The call is the installed `callboard` executable (its own process, real rtc SDK); the agent is
examples/echo_agent.py in a livekit-agents worker process (thread executor); the server is a real
`callboard server` process. WebRTC: run through scripts/test.sh (network namespace).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.cli import creds, run_exe
from tests.support.clients import wait_for
from tests.support.echo_agents import echo_fleet
from tests.support.rtc import needs_netns
from tests.support.server import DEV_KEY, DEV_SECRET, ServerProcess
from tests.support.worker_procs import worker_process

pytestmark = needs_netns
RTC_AGENT = Path(__file__).parents[1] / "support" / "rtc_agent.py"


def call_json(server: ServerProcess, home: Path, *args: str, suffix: str = "",
              timeout_s: float = 60) -> tuple[int, dict[str, Any], str]:
    env = {"LIVEKIT_AGENT_SUFFIX": suffix} if suffix else {}
    done = run_exe("call", *creds(server), "--json", *args, home=home, env=env,
                   timeout_s=timeout_s)
    try:
        body = json.loads(done.stdout)
    except ValueError:
        body = {}
    return done.returncode, body, done.stderr


async def test_call_message_expect_reply_is_answered_by_the_echo_agent(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with echo_fleet(server, tmp_path / "agents") as fleet:
        jack = fleet.start(suffix="jack")
        await fleet.wait_registered(http)
        rc, body, err = call_json(server, tmp_path, "--message", "hi", "--expect-reply",
                                  "--timeout", "30", suffix="jack")
        assert rc == 0, (body, err, jack.describe())
    assert body["ok"] is True
    assert body["agent_name"] == "echo-agent-jack"
    answered = body["answered_by"]
    assert answered["worker_id"] == jack.worker_id
    assert answered["agent_name"] == "echo-agent-jack"
    assert answered["developer"] == ""
    assert answered["address"].startswith("127.0.0.1")
    assert [r["text"] for r in body["replies"]] == ["echo: hi"]
    assert body["replies"][0]["topic"] == "lk.transcription"
    assert {"connect", "agent_joined", "reply", "total"} <= set(body["timings_ms"])
    assert [c["text"] for c in jack.chats()] == ["hi"]
    assert [j["room"] for j in jack.jobs()] == [body["room"]]


async def test_no_agent_within_the_timeout_exits_1_with_the_explain_trace(
    server: ServerProcess, tmp_path: Path
) -> None:
    done = run_exe("call", *creds(server), "--agent", "nobody", "--message", "hi",
                   "--expect-reply", "--timeout", "2", home=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    err = done.stderr
    assert "Traceback" not in err
    assert err.startswith("warning: no worker serves agent 'nobody' now")
    assert "\nerror: no agent 'nobody' joined room call-" in err
    assert "explain of the room's dispatch:" in err
    assert "token dispatch for agent 'nobody'" in err or "agent 'nobody'" in err
    assert "outcome: waiting for a worker" in err
    rc, body, _ = call_json(server, tmp_path, "--agent", "nobody", "--message", "hi",
                            "--expect-reply", "--timeout", "1")
    assert rc == 1 and body["ok"] is False and body["answered_by"] is None
    assert body["error"].startswith("no agent 'nobody' joined")
    assert body["explain"]["agent_name"] == "nobody"
    assert body["explain"]["jobs"][0]["state"] == "pending"


async def test_an_agent_that_never_replies_fails_with_where_its_job_runs(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """tests/support/rtc_agent.py joins but does not answer text streams."""
    out = tmp_path / "mute.jsonl"
    with worker_process(server, RTC_AGENT, "mute", out):
        await wait_for(lambda: out.exists() and "registered" in out.read_text(), timeout_s=45)
        done = run_exe("call", *creds(server), "--agent", "mute", "--message", "hi",
                       "--expect-reply", "--timeout", "4", home=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "answered by worker AW_" in done.stdout
    assert done.stderr.startswith("error: agent 'mute' did not reply within the timeout")
    assert "outcome: running on worker AW_" in done.stderr


async def test_call_warns_of_crosstalk_with_the_fix(
    server: ServerProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The same key and agent name from a second host (127.0.0.2 stands in for a teammate's
    laptop): the call still works, and says that calls may land on the other machine and why."""
    from callboard.client.worker import LightWorker, WorkerProtocol

    with echo_fleet(server, tmp_path / "agents") as fleet:
        fleet.start(suffix="jack")
        await fleet.wait_registered(http)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        ) as laptop:
            decliner = WorkerProtocol(agent_name="echo-agent-jack", decide=lambda job: False)
            other = LightWorker(server.ws_url, DEV_KEY, DEV_SECRET, decliner, laptop)
            await other.connect()
            rc, body, err = call_json(server, tmp_path, "--message", "hi", "--expect-reply",
                                      "--timeout", "30", suffix="jack")
            text = run_exe("call", *creds(server), "--message", "hi", "--expect-reply",
                           "--timeout", "30", home=tmp_path,
                           env={"LIVEKIT_AGENT_SUFFIX": "jack"}, timeout_s=60)
            await other.close()
    assert rc == 0, (body, err)
    [item] = body["crosstalk"]
    assert item["agent_name"] == "echo-agent-jack"
    assert sorted(item["hosts"]) == ["127.0.0.1", "127.0.0.2"]
    assert "developer" in item["fix"].lower()
    assert text.returncode == 0, text.stderr
    assert "warning: crosstalk for echo-agent-jack:" in text.stderr and "Fix:" in text.stderr
