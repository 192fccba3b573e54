"""The project API, `/callboard/v1/…` (JSON, project key JWT): what LiveKit has no API for.

Workers as they are now, a dispatch's explain trace, and the project's event log.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from callboard.dispatch.model import DispatchRecord, JobRecord, WorkerView
from callboard.protocol.errors import InvalidArgument, NotFound
from callboard.server import crosstalk
from callboard.server.auth import Caller, authenticate, request_token, require
from callboard.server.hub import Hub
from callboard.store.base import EventQuery, StoredEvent


def _caller(request: web.Request) -> tuple[Hub, Caller]:
    hub: Hub = request.app["hub"]
    caller = authenticate(hub.store, request_token(request))
    require(caller, "room_admin", "room_list")
    return hub, caller


def worker_json(view: WorkerView, crosstalk: str = "") -> dict[str, Any]:
    """`crosstalk` is why the worker's pool has crosstalk ("" = none; server/crosstalk.py)."""
    info = view.info
    return {
        "id": info.worker_id,
        "agent_name": info.agent_name,
        "namespace": info.namespace,
        "job_type": info.job_type.name.lower(),
        "version": info.version,
        "status": view.status.name.lower(),
        "load": round(view.load, 4),
        "jobs": list(view.job_ids),
        "reported_job_count": view.reported_job_count,
        "remote": info.remote,
        "api_key": info.api_key,
        "developer": info.owner,
        "connected_at_ms": info.connected_at_ms,
        "crosstalk": crosstalk,
    }


def job_json(job: JobRecord) -> dict[str, Any]:
    out = asdict(job)
    out["state"] = job.state.value
    return out


def dispatch_json(record: DispatchRecord, jobs: list[JobRecord]) -> dict[str, Any]:
    spec = record.spec
    return {
        "id": spec.dispatch_id,
        "agent_name": spec.agent_name,
        "room": spec.room.name,
        "room_sid": spec.room.sid,
        "developer": spec.owner,
        "api_key": spec.api_key,
        "source": spec.source,
        "metadata": spec.metadata,
        "created_at_ms": spec.created_at_ms,
        "deleted": record.deleted,
        "jobs": [job_json(j) for j in jobs],
        "trace": [
            {"at_ms": t.at_ms, "what": t.what, "detail": t.detail} for t in record.trace
        ],
    }


def event_json(event: StoredEvent) -> dict[str, Any]:
    return {k: v for k, v in asdict(event).items() if v != "" or k in ("message", "kind")}


async def list_workers(request: web.Request) -> web.Response:
    hub, caller = _caller(request)
    agent_name = request.query.get("agent_name")
    views = [
        v
        for v in hub.core.workers(caller.project_id)
        if agent_name is None or v.info.agent_name == agent_name
    ]
    marked = crosstalk.marks(request.app["crosstalk"].current(caller.project_id))
    workers = [worker_json(v, marked.get(v.info.worker_id, "")) for v in views]
    return web.json_response({"workers": workers})


async def get_worker(request: web.Request) -> web.Response:
    hub, caller = _caller(request)
    view = hub.core.worker(request.match_info["worker"])
    if view is None or view.info.project_id != caller.project_id:
        raise NotFound(f"worker {request.match_info['worker']!r} not found")
    marked = crosstalk.marks(request.app["crosstalk"].current(caller.project_id))
    return web.json_response(worker_json(view, marked.get(view.info.worker_id, "")))


async def explain_dispatch(request: web.Request) -> web.Response:
    hub, caller = _caller(request)
    dispatch_id = request.match_info["dispatch"]
    record = hub.core.dispatch(dispatch_id)
    jobs: list[JobRecord] = []
    if record is not None:
        jobs = list(hub.core.jobs_of_dispatch(dispatch_id))
    else:  # forgotten once ended and saved: the store has it, once what is queued is written
        await hub.store.flush()
        record = hub.store.get_dispatch(caller.project_id, dispatch_id)
        if record is not None:
            jobs = [
                j for j in (hub.store.get_job(caller.project_id, i) for i in record.job_ids) if j
            ]
    if record is None or record.spec.project_id != caller.project_id:
        raise NotFound(f"dispatch {dispatch_id!r} not found")
    return web.json_response(dispatch_json(record, jobs))


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(
            f"query parameter {name} must be an integer, got {raw!r}", name
        ) from None


async def list_events(request: web.Request) -> web.Response:
    hub, caller = _caller(request)
    q = request.query
    query = EventQuery(
        project_id=caller.project_id,
        room_name=q.get("room") or None,
        job_id=q.get("job") or None,
        dispatch_id=q.get("dispatch") or None,
        agent_name=q.get("agent_name"),
        after_seq=_int_query(request, "after", 0),
        limit=max(1, min(_int_query(request, "limit", 100), 1000)),
        kinds=tuple(k for k in q.get("kind", "").split(",") if k),
    )
    await hub.store.flush()  # read your writes: lines submitted before this request are in it
    events = hub.store.query_events(query)
    next_after = events[-1].seq if events else query.after_seq
    return web.json_response({"events": [event_json(e) for e in events], "next_after": next_after})


def routes() -> list[web.RouteDef]:
    base = "/callboard/v1"
    return [
        web.get(f"{base}/workers", list_workers),
        web.get(f"{base}/workers/{{worker}}", get_worker),
        web.get(f"{base}/dispatches/{{dispatch}}/explain", explain_dispatch),
        web.get(f"{base}/events", list_events),
    ]
