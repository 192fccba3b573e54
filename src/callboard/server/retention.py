"""Retention: a periodic sweep deleting what is older than the `retention_*_days` settings.

What goes: event-log lines (agent log lines too) older than `retention_events_days`; terminal jobs
last updated before `retention_jobs_days`; deleted dispatches (by the API, or their room closed)
created before `retention_dispatches_days`, with their jobs; usage days before
`retention_usage_days`. What a restart would resume (live dispatches, unfinished jobs) is never
swept. Rooms are not deleted behind the room manager's back: a stored room older than
`retention_rooms_days` with nobody in it is closed through it (its dispatches end, webhooks go out),
or, when this server does not hold it open, its record is deleted. 0 keeps a kind forever.

The sweep runs `retention_sweep_interval_s` apart, the first time a minute after start; `sweep_once`
runs it now (tests, and whoever wants to call it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from callboard.protocol.errors import NotFound
from callboard.server.hub import Hub
from callboard.server.usage import day_of
from callboard.settings import Settings
from callboard.store.base import SweepCutoffs

log = logging.getLogger("callboard.retention")

DAY_MS = 86_400_000
FIRST_SWEEP_DELAY_S = 60.0


def cutoffs(settings: Settings, now_ms: int) -> SweepCutoffs:
    def before(days: int) -> int:
        return now_ms - days * DAY_MS if days > 0 else 0

    usage_days = settings.retention_usage_days
    return SweepCutoffs(
        events_before_ms=before(settings.retention_events_days),
        jobs_before_ms=before(settings.retention_jobs_days),
        dispatches_before_ms=before(settings.retention_dispatches_days),
        usage_before_day=day_of(now_ms - usage_days * DAY_MS) if usage_days > 0 else "",
    )


async def sweep_once(app: web.Application) -> dict[str, int]:
    hub: Hub = app["hub"]
    now = hub.clock_ms()
    done = await hub.store.sweep_old(cutoffs(hub.settings, now))
    done["rooms"] = await _sweep_rooms(app, now)
    if any(done.values()):
        log.info("retention sweep deleted %s", ", ".join(f"{n} {k}" for k, n in done.items()))
    return done


async def _sweep_rooms(app: web.Application, now_ms: int) -> int:
    hub: Hub = app["hub"]
    days = hub.settings.retention_rooms_days
    if days <= 0:
        return 0
    rooms: Any = app["rooms"]
    swept = 0
    for project in hub.store.list_projects():
        for room in hub.store.list_rooms(project.project_id):
            if room.created_at_ms >= now_ms - days * DAY_MS:
                continue
            try:
                if rooms.list_participants(project.project_id, room.name):
                    continue
            except NotFound:  # not open on this server: only its record is left
                pass
            if not rooms.close_room(project.project_id, room.name, "retention"):
                await hub.store.delete_room(project.project_id, room.name)
            swept += 1
    return swept


async def _loop(app: web.Application) -> None:
    interval = app["hub"].settings.retention_sweep_interval_s
    await asyncio.sleep(min(FIRST_SWEEP_DELAY_S, interval))
    while True:
        try:
            await sweep_once(app)
        except Exception:
            log.exception("retention sweep failed; next try in %.0f s", interval)
        await asyncio.sleep(interval)


def install(app: web.Application) -> None:
    async def start(app: web.Application) -> None:
        app["retention_task"] = asyncio.create_task(_loop(app), name="retention sweep")

    async def stop(app: web.Application) -> None:
        task: asyncio.Task[None] | None = app.get("retention_task")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
