"""Crosstalk detection: workers that would be load-balanced together but come from different places.

A pool is what the dispatcher balances over: one project, one owner (production or a developer),
one agent name. Workers registered with different developers' keys are never in one pool, so the
case left is LiveKit's own: one key shared between machines. The rule (`find_crosstalk`, a plain
function) is:

- hosts are the connection's remote address without the port;
- a project may mark hosts as `production` or `laptop` (admin API, `project_hosts`);
- a pool has crosstalk when it holds workers from a production host *and* from a host not marked
  production (a laptop in the production pool, or production in a developer's pool), or when one
  key of the pool is used from more than one host that is not marked production. Production may
  thus run a pool on many machines once those machines are marked; until then every second host
  of a shared key is reported.

The fix is always the same: give each developer their own key (`callboard admin keys add PROJECT
--developer NAME`), so their workers get only their dispatches. The warning says so, in the server
log (once per pool and set of hosts), in the event log (`crosstalk.detected`), in each worker's
`crosstalk` field of `GET /callboard/v1/workers`, and in `GET /callboard/v1/crosstalk`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from callboard.dispatch.model import Action, RecordEvent, WorkerView
from callboard.protocol.errors import InvalidArgument, NotFound
from callboard.server.auth import authenticate, check_admin, request_token, require
from callboard.server.hub import Hub

log = logging.getLogger("callboard.crosstalk")

PRODUCTION = "production"
LAPTOP = "laptop"
ROLES = (PRODUCTION, LAPTOP)


@dataclass(frozen=True)
class Crosstalk:
    """One pool whose workers come from places that should not share dispatches."""

    project_id: str
    owner: str
    agent_name: str
    reason: str
    hosts: tuple[str, ...]
    worker_ids: tuple[str, ...]
    api_keys: tuple[str, ...]

    @property
    def fix(self) -> str:
        who = f"developer {self.owner!r}" if self.owner else "production"
        return (
            f"workers of {who} for agent {self.agent_name!r} share a pool across hosts "
            f"{', '.join(self.hosts)}: give each developer a key of their own "
            "(callboard admin keys add PROJECT --developer NAME) so their workers only get their "
            "own dispatches; mark production machines as such "
            "(callboard admin project hosts PROJECT --production HOST)"
        )


def host_of(remote: str) -> str:
    """`1.2.3.4:5678` -> `1.2.3.4`; `[::1]:5678` and `::1` kept whole without brackets."""
    if remote.startswith("["):
        return remote[1:].split("]", 1)[0]
    if remote.count(":") == 1:
        return remote.rsplit(":", 1)[0]
    return remote


def find_crosstalk(workers: Iterable[WorkerView], roles: Mapping[str, str]) -> list[Crosstalk]:
    """Every pool with crosstalk among `workers` (one project's), given its host roles."""
    pools: dict[tuple[str, str, str], list[WorkerView]] = defaultdict(list)
    for view in workers:
        info = view.info
        pools[(info.project_id, info.owner, info.agent_name)].append(view)
    found = []
    for (project_id, owner, agent_name), members in sorted(pools.items()):
        reason = _pool_reason(members, roles)
        if reason:
            found.append(
                Crosstalk(
                    project_id=project_id,
                    owner=owner,
                    agent_name=agent_name,
                    reason=reason,
                    hosts=tuple(sorted({host_of(v.info.remote) for v in members})),
                    worker_ids=tuple(v.info.worker_id for v in members),
                    api_keys=tuple(sorted({v.info.api_key for v in members})),
                )
            )
    return found


def _pool_reason(members: list[WorkerView], roles: Mapping[str, str]) -> str:
    hosts = {host_of(v.info.remote) for v in members}
    production = {h for h in hosts if roles.get(h) == PRODUCTION}
    others = hosts - production
    if production and others:
        return (
            f"production hosts ({', '.join(sorted(production))}) and other hosts "
            f"({', '.join(sorted(others))}) in one pool"
        )
    by_key: dict[str, set[str]] = defaultdict(set)
    for view in members:
        host = host_of(view.info.remote)
        if host not in production:
            by_key[view.info.api_key].add(host)
    for key, key_hosts in sorted(by_key.items()):
        if len(key_hosts) > 1:
            return f"key {key} used from {len(key_hosts)} hosts ({', '.join(sorted(key_hosts))})"
    return ""


class CrosstalkWatch:
    """A hub listener: on every worker connect/disconnect, re-check that project's pools.

    Logs a warning (and an event-log line) the first time a pool shows a given set of hosts, so a
    steady state is reported once, and a new laptop joining is reported again.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._reported: set[tuple[str, str, str, tuple[str, ...]]] = set()

    def current(self, project_id: str) -> list[Crosstalk]:
        roles = self.hub.store.project_hosts(project_id)
        return find_crosstalk(self.hub.core.workers(project_id), roles)

    def __call__(self, actions: list[Action]) -> None:
        projects: set[str] = set()
        for a in actions:  # every batch of every dispatch passes here: a plain loop, no frame
            if isinstance(a, RecordEvent) and a.kind == "worker.connected":
                projects.add(a.project_id)
        for project_id in projects:
            self.check(project_id)

    def check(self, project_id: str) -> list[Crosstalk]:
        found = self.current(project_id)
        for item in found:
            mark = (item.project_id, item.owner, item.agent_name, item.hosts)
            if mark in self._reported:
                continue
            self._reported.add(mark)
            log.warning("crosstalk in project %s: %s. %s", project_id, item.reason, item.fix)
            self.hub.record(
                RecordEvent(
                    project_id=project_id,
                    kind="crosstalk.detected",
                    at_ms=self.hub.clock_ms(),
                    message=f"{item.reason}. {item.fix}",
                    level="warning",
                    agent_name=item.agent_name,
                    owner=item.owner,
                )
            )
        return found


def marks(found: Iterable[Crosstalk]) -> dict[str, str]:
    """worker id -> the reason its pool has crosstalk."""
    return {wid: item.reason for item in found for wid in item.worker_ids}


def crosstalk_json(item: Crosstalk) -> dict[str, Any]:
    return {
        "developer": item.owner,
        "agent_name": item.agent_name,
        "reason": item.reason,
        "hosts": list(item.hosts),
        "workers": list(item.worker_ids),
        "api_keys": list(item.api_keys),
        "fix": item.fix,
    }


# -- API -------------------------------------------------------------------------------------------


async def get_crosstalk(request: web.Request) -> web.Response:
    """`GET /callboard/v1/crosstalk`: the caller's project's pools with crosstalk, with the fix."""
    hub: Hub = request.app["hub"]
    caller = authenticate(hub.store, request_token(request))
    require(caller, "room_admin", "room_list")
    watch: CrosstalkWatch = request.app["crosstalk"]
    found = watch.current(caller.project_id)
    return web.json_response({"crosstalk": [crosstalk_json(c) for c in found]})


async def get_hosts(request: web.Request) -> web.Response:
    hub, project_id = _admin_project(request)
    return web.json_response({"hosts": hub.store.project_hosts(project_id)})


async def put_hosts(request: web.Request) -> web.Response:
    """Body `{"production": [hosts], "laptop": [hosts]}`: each role given is replaced."""
    hub, project_id = _admin_project(request)
    try:
        body = await request.json()
    except ValueError:
        raise InvalidArgument("body must be JSON") from None
    if not isinstance(body, dict) or not set(body) <= set(ROLES):
        raise InvalidArgument(f"body must be an object with keys among {list(ROLES)}")
    for role, hosts in body.items():
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise InvalidArgument(f"{role} must be a list of host addresses")
        await hub.store.set_project_hosts(project_id, role, sorted(set(hosts)))
    watch: CrosstalkWatch = request.app["crosstalk"]
    watch.check(project_id)
    return web.json_response({"hosts": hub.store.project_hosts(project_id)})


def _admin_project(request: web.Request) -> tuple[Hub, str]:
    check_admin(request, request.app["admin_token"])
    hub: Hub = request.app["hub"]
    project = hub.store.get_project(request.match_info["project"])
    if project is None:
        raise NotFound(f"project {request.match_info['project']!r} not found")
    return hub, project.project_id


def install(app: web.Application) -> None:
    hub: Hub = app["hub"]
    watch = CrosstalkWatch(hub)
    hub.listeners.append(watch)
    app["crosstalk"] = watch


def routes() -> list[web.RouteDef]:
    admin = "/callboard/v1/admin/projects/{project}/hosts"
    return [
        web.get("/callboard/v1/crosstalk", get_crosstalk),
        web.get(admin, get_hosts),
        web.put(admin, put_hosts),
    ]
