"""The app factory and the process around it: one aiohttp app on one port, every surface on it.

Start-up order matters: open the store, make sure the dev project exists when asked, resume what the
store says was live (jobs that were running wait the grace window for their workers to come back),
then listen. SIGTERM stops accepting, lets running jobs drain up to `drain_timeout_s`, closes the
workers' connections, and flushes the store before exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import warnings
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from jwt.warnings import InsecureKeyLengthWarning

from callboard import __version__
from callboard.dispatch.model import Restored
from callboard.protocol.errors import WS_GOING_AWAY, ApiError
from callboard.rtc.manager import RoomManager
from callboard.server import (
    admin,
    api,
    crosstalk,
    metrics,
    observer,
    otlp,
    retention,
    rtc_ws,
    usage,
)
from callboard.server.agent_ws import handle_agent, keep_alive
from callboard.server.hub import Hub
from callboard.server.twirp import MAX_BODY_BYTES, handle_twirp, twirp_error
from callboard.settings import Settings
from callboard.store.base import Store
from callboard.store.sqlite import SqliteStore

log = logging.getLogger("callboard.server")

YOUNG_GC_THRESHOLD = 5_000  # allocations between young collections (CPython: 700)

DEV_PROJECT = "dev"
DEV_KEY = "devkey"
DEV_SECRET = "secret"
DEV_ADMIN_TOKEN = "dev-admin"


@web.middleware
async def api_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """ApiError anywhere becomes a Twirp-style JSON error; nothing else leaks a traceback."""
    if request.app["draining"] and request.path.startswith(("/twirp/", "/callboard/v1/")):
        return twirp_error(ApiError("unavailable", "server is shutting down"))
    try:
        return await handler(request)
    except ApiError as exc:
        return twirp_error(exc)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return twirp_error(ApiError("internal", "internal server error (see the server log)"))


async def health(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    if hub.store.failure:
        return web.Response(status=503, text=f"store failed: {hub.store.failure}\n")
    return web.Response(text="OK")


def create_app(settings: Settings, store: Store, admin_token: str) -> web.Application:
    app = web.Application(middlewares=[api_errors], client_max_size=MAX_BODY_BYTES)
    hub = Hub(settings, store)
    app["hub"] = hub
    app["rooms"] = RoomManager(settings, store, node_id=hub.node_id)
    app["admin_token"] = admin_token
    app["draining"] = False
    app["sockets"] = weakref.WeakSet()
    app.router.add_get("/", health)
    app.router.add_get("/agent", handle_agent)
    app.router.add_route("*", "/twirp/{service}/{method}", handle_twirp)
    app.router.add_routes(admin.routes())
    app.router.add_routes(api.routes())
    app.router.add_routes(rtc_ws.routes())
    observer.install(app)  # dispatch, event log and webhooks for the rooms
    _install_isolation(app)
    app.cleanup_ctx.append(keep_alive)
    app.on_startup.append(_resume)
    app.on_startup.append(_start_rooms)
    app.on_shutdown.append(_stop_rooms)
    app.on_shutdown.append(_close_sockets)
    return app


def _install_isolation(app: web.Application) -> None:
    """Crosstalk, usage, agent uploads (OTLP), /metrics and the retention sweep."""
    for module in (crosstalk, usage, otlp, metrics, retention):  # metrics reads the others
        module.install(app)
    for module in (crosstalk, usage, otlp, metrics):
        app.router.add_routes(module.routes())


async def _resume(app: web.Application) -> None:
    hub: Hub = app["hub"]
    dispatches, jobs = hub.store.live_state()
    if dispatches or jobs:
        log.info(
            "resuming %d dispatches and %d unfinished jobs from the store",
            len(dispatches),
            len(jobs),
        )
    hub.feed(Restored(tuple(dispatches), tuple(jobs), hub.clock_ms()))


async def _start_rooms(app: web.Application) -> None:
    rooms: RoomManager = app["rooms"]
    rooms.start()


async def _stop_rooms(app: web.Application) -> None:
    """Participants get leave{SERVER_SHUTDOWN}; peer connections and room tasks are closed."""
    rooms: RoomManager = app["rooms"]
    await rooms.stop()


async def _close_sockets(app: web.Application) -> None:
    hub: Hub = app["hub"]
    for link in list(hub.links.values()):
        link.close(WS_GOING_AWAY, "server shutting down")
    for ws in list(app["sockets"]):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=WS_GOING_AWAY, message=b"server shutting down"), 2)
    hub.stop()


def admin_token_for(settings: Settings) -> tuple[str, bool]:
    """The admin credential and whether it was just created (then it is printed once)."""
    if settings.admin_token:
        return settings.admin_token, False
    if settings.dev:
        return DEV_ADMIN_TOKEN, False
    path = Path(settings.db + ".admin")
    if path.exists():
        return path.read_text().strip(), False
    token = "cbadmin_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token, True


async def ensure_dev_project(store: Store) -> None:
    project = store.get_project(DEV_PROJECT) or await store.create_project(DEV_PROJECT)
    existing = store.get_key(DEV_KEY)
    if existing is None:
        await store.add_key(project.project_id, key=DEV_KEY, secret=DEV_SECRET)


def banner(settings: Settings, admin_token: str, fresh_admin: bool) -> str:
    lines = [f"callboard {__version__} listening on {settings.url}  (db {settings.db})"]
    if settings.dev:
        lines += [
            "dev project 'dev':",
            f"  LIVEKIT_URL={settings.url}",
            f"  LIVEKIT_API_KEY={DEV_KEY}",
            f"  LIVEKIT_API_SECRET={DEV_SECRET}",
            f"admin credential (dev): {admin_token}",
        ]
    elif fresh_admin:
        lines.append(
            f"admin credential (shown once, kept in {settings.db}.admin, mode 0600): {admin_token}"
        )
    else:
        lines.append(f"admin credential: in {settings.db}.admin")
    return "\n".join(lines)


async def serve(settings: Settings, *, ready: Callable[[str], None] = print) -> None:
    """Run until SIGTERM/SIGINT, then drain and exit."""
    store = SqliteStore(settings.db, commit_window_s=settings.store_commit_window_ms / 1000)
    await store.open()
    try:
        if settings.dev:
            # LiveKit's dev secret "secret" is 6 bytes; kept for compatibility, so PyJWT's
            # short-key warning would repeat for every token without telling anyone anything.
            warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
            await ensure_dev_project(store)
        admin_token, fresh = admin_token_for(settings)
        app = create_app(settings, store, admin_token)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
        await site.start()
        # What start-up made (modules, protobuf descriptors, aiortc) lives as long as the process:
        # out of the collector's sight, each full collection scans only what serving created.
        gc.freeze()
        # Under load, each young collection rescans every request in flight (their tasks,
        # frames, futures) and promotes them, so older collections rescan them too. Collecting
        # after 5,000 allocations instead of 700 cut the collector's time per dispatch by two
        # thirds in bench/dispatch.py; a young collection then takes about 1 ms.
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        ready(banner(settings, admin_token, fresh))
        await _wait_for_signal()
        log.info("shutting down: draining")
        app["draining"] = True
        await _drain(app["hub"], settings.drain_timeout_s)
        await runner.cleanup()
    finally:
        failure = store.failure
        await store.close()
    if failure:
        log.error("stopped; the store had failed (exit code 1): %s", failure)
        raise SystemExit(1)
    log.info("stopped")


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _drain(hub: Hub, timeout_s: float) -> None:
    """Wait (bounded) for jobs in flight to end; what is left resumes after the restart."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline and hub.core.active_job_count() > 0:
        await asyncio.sleep(0.1)
    left = hub.core.active_job_count()
    if left:
        log.info("%d jobs still running at shutdown; they resume when the server restarts", left)
    if not hub.store.failure:  # else nothing more can be written, and it was logged
        await hub.store.flush()
