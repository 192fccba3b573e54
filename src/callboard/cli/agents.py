"""Which agent a test call or load test talks to, and which worker answered it.

Shared by `callboard call` and `callboard perf`. The choice of agent name is a pure function of
the server's worker list (`GET /callboard/v1/workers`), the caller's key and
`$LIVEKIT_AGENT_SUFFIX` — the seed pattern `AGENT_NAME = f"{BASE}-{suffix}"` — so it is tested
without a server:

1. `$LIVEKIT_AGENT_SUFFIX` set: the agent names that end in `-<suffix>`;
2. else the names served by workers registered with the caller's own key, when it is a developer
   key (its workers say `developer`);
3. else every agent name the project's workers serve.

Exactly one candidate is the answer; none or several is an `AgentChoiceError` that lists them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from livekit import api

from callboard.cli.client import Api, Refused, segment

Json = dict[str, Any]


class AgentChoiceError(Exception):
    """No single agent name fits; the message lists what the project's workers serve."""


@dataclass(frozen=True)
class Answer:
    """The worker whose job joined the room, as the server describes it."""

    worker_id: str
    agent_name: str
    developer: str
    address: str
    job_id: str
    dispatch_id: str
    identity: str

    def as_json(self) -> Json:
        return {
            "worker_id": self.worker_id,
            "agent_name": self.agent_name,
            "developer": self.developer,
            "address": self.address,
            "job_id": self.job_id,
            "dispatch_id": self.dispatch_id,
            "identity": self.identity,
        }

    def line(self) -> str:
        owner = f"developer {self.developer}" if self.developer else "production"
        return (
            f"answered by worker {self.worker_id} ({self.agent_name}, {owner}, "
            f"{self.address or 'address unknown'}) as {self.identity}, job {self.job_id}"
        )


def choose_agent(workers: list[Json], api_key: str, suffix: str) -> str:
    """The one agent name to call (see the module docstring), or `AgentChoiceError`."""
    named = [w for w in workers if w.get("agent_name")]
    every = sorted({str(w["agent_name"]) for w in named})
    if suffix:
        found = sorted(n for n in every if n.endswith(f"-{suffix}"))
        rule = f"ending in '-{suffix}' ($LIVEKIT_AGENT_SUFFIX)"
    elif mine := [w for w in named if w.get("api_key") == api_key and w.get("developer")]:
        found = sorted({str(w["agent_name"]) for w in mine})
        rule = f"served by your developer key {api_key}"
    else:
        found, rule = every, "served by the project's workers"
    if len(found) == 1:
        return found[0]
    if not found:
        have = ", ".join(every) if every else "none (no named agent worker is connected)"
        raise AgentChoiceError(
            f"no agent name {rule}; agent names served now: {have}; "
            f"start your agent or give --agent NAME"
        )
    raise AgentChoiceError(f"several agent names {rule}: {', '.join(found)}; give --agent NAME")


async def list_workers(a: Api) -> list[Json]:
    found: list[Json] = (await a.get("/workers"))["workers"]
    return found


async def room_dispatch(a: Api, room: str, agent_name: str) -> api.AgentDispatch | None:
    """The room's (newest) dispatch of `agent_name`, or None."""
    dispatches = await a.lk.agent_dispatch.list_dispatch(room)
    mine = [d for d in dispatches if d.agent_name == agent_name]
    return mine[-1] if mine else None


async def answered_by(a: Api, room: str, agent_name: str, identity: str) -> Answer | None:
    """The job of `room` whose participant is `identity`, and the worker that runs it."""
    dispatch = await room_dispatch(a, room, agent_name)
    if dispatch is None:
        return None
    jobs = [j for j in dispatch.state.jobs if j.state.participant_identity == identity]
    if not jobs:
        return None
    job = jobs[-1]
    worker_id = job.state.worker_id
    try:
        worker: Json = await a.get(f"/workers/{segment(worker_id)}")
    except Refused:
        worker = {}  # gone since: what the job says is all we have
    return Answer(
        worker_id=worker_id,
        agent_name=agent_name,
        developer=str(worker.get("developer") or ""),
        address=str(worker.get("remote") or ""),
        job_id=job.id,
        dispatch_id=dispatch.id,
        identity=identity,
    )


async def find_answer(a: Api, room: str, agent_name: str, identity: str) -> Answer | None:
    """`answered_by`, retried briefly: the job's participant is recorded when the worker takes
    it, which is before its agent joins, but the agent's join can race the listing."""
    for _ in range(10):
        answer = await answered_by(a, room, agent_name, identity)
        if answer is not None:
            return answer
        await asyncio.sleep(0.2)
    return None


async def explain_room(a: Api, room: str, agent_name: str) -> Json | None:
    """The explain JSON of the room's dispatch of `agent_name` (None: there is none)."""
    dispatch = await room_dispatch(a, room, agent_name)
    if dispatch is None:
        return None
    found: Json = await a.get(f"/dispatches/{segment(dispatch.id)}/explain")
    return found
