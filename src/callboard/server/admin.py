"""The admin plane, `/callboard/v1/admin/…`: projects, their keys and webhooks, behind the admin
credential.

Changes act at once on the running server: revoking a key closes its workers' connections, deleting
a project closes its workers and forgets its rooms.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from callboard.protocol.errors import ApiError, InvalidArgument, NotFound
from callboard.server import webhooks
from callboard.server.auth import check_admin
from callboard.server.hub import Hub
from callboard.store.base import ApiKey, Project, Store, Webhook

log = logging.getLogger("callboard.admin")


def project_json(project: Project) -> dict[str, Any]:
    return {"id": project.project_id, "name": project.name, "created_at_ms": project.created_at_ms}


def key_json(key: ApiKey, *, with_secret: bool, url: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": key.key,
        "project_id": key.project_id,
        "kind": key.kind,
        "developer": key.developer,
        "created_at_ms": key.created_at_ms,
        "revoked": key.revoked,
    }
    if with_secret:
        out["secret"] = key.secret
        out["url"] = url
    return out


def _hub(request: web.Request) -> Hub:
    hub: Hub = request.app["hub"]
    check_admin(request, request.app["admin_token"])
    return hub


def _project(hub: Hub, name_or_id: str) -> Project:
    project = hub.store.get_project(name_or_id)
    if project is None:
        raise NotFound(f"project {name_or_id!r} not found")
    return project


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError("malformed", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError("malformed", "body must be a JSON object")
    return body


async def list_projects(request: web.Request) -> web.Response:
    hub = _hub(request)
    return web.json_response({"projects": [project_json(p) for p in hub.store.list_projects()]})


async def create_project(request: web.Request) -> web.Response:
    hub = _hub(request)
    name = str((await _json_body(request)).get("name", "")).strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidArgument("project name must be 1-64 letters, digits, '-', '_' or '.'", "name")
    try:
        project = await hub.store.create_project(name)
    except ValueError as exc:
        raise ApiError("already_exists", str(exc)) from None
    log.info("project %s (%s) created", project.name, project.project_id)
    return web.json_response(project_json(project), status=201)


async def delete_project(request: web.Request) -> web.Response:
    hub = _hub(request)
    project = _project(hub, request.match_info["project"])
    closed = hub.close_workers_of_project(project.project_id, "project deleted")
    await hub.store.delete_project(project.project_id)
    _webhooks_changed(request, project.project_id)
    log.info("project %s deleted (%d workers disconnected)", project.name, closed)
    return web.json_response({"deleted": project.name, "workers_disconnected": closed})


async def list_keys(request: web.Request) -> web.Response:
    hub = _hub(request)
    project = _project(hub, request.match_info["project"])
    keys = hub.store.list_keys(project.project_id, include_revoked=True)
    return web.json_response({"keys": [key_json(k, with_secret=False) for k in keys]})


async def add_key(request: web.Request) -> web.Response:
    hub = _hub(request)
    project = _project(hub, request.match_info["project"])
    developer = str((await _json_body(request)).get("developer", "") or "").strip()
    if developer and (len(developer) > 64 or not all(c.isalnum() or c in "-_." for c in developer)):
        raise InvalidArgument(
            "developer must be 1-64 letters, digits, '-', '_' or '.'", "developer"
        )
    key = await hub.store.add_key(project.project_id, developer=developer)
    log.info("key %s added to project %s (%s)", key.key, project.name, key.kind)
    return web.json_response(key_json(key, with_secret=True, url=hub.settings.url), status=201)


async def revoke_key(request: web.Request) -> web.Response:
    hub = _hub(request)
    revoked = await hub.store.revoke_key(request.match_info["key"])
    if revoked is None:
        raise NotFound(f"key {request.match_info['key']!r} not found")
    closed = hub.close_workers_of_key(revoked.key, "API key revoked")
    log.info("key %s revoked (%d workers disconnected)", revoked.key, closed)
    return web.json_response({"revoked": revoked.key, "workers_disconnected": closed})


def webhook_json(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.webhook_id,
        "project_id": hook.project_id,
        "url": hook.url,
        "signing_key": hook.signing_key,
        "created_at_ms": hook.created_at_ms,
    }


async def add_webhook_to(store: Store, project: Project, url: str, signing_key: str) -> Webhook:
    """Validate and add; the signing key must be a production key of the project (default: its
    oldest). Shared by the admin API and the CLI's offline `--db` mode."""
    url = url.strip()
    problem = webhooks.check_url(url)
    if problem is not None:
        raise InvalidArgument(problem, "url")
    key = webhooks.pick_signing_key(store.list_keys(project.project_id), project.project_id,
                                    signing_key.strip())
    if isinstance(key, str):
        code = "invalid_argument" if signing_key.strip() else "failed_precondition"
        raise ApiError(code, key, {"argument": "signing_key"})
    try:
        return await store.add_webhook(project.project_id, url, key.key)
    except ValueError as exc:
        raise ApiError("already_exists", str(exc)) from None


def _webhooks_changed(request: web.Request, project_id: str) -> None:
    notifier: webhooks.Notifier | None = request.app.get("webhooks")
    if notifier is not None:
        notifier.reload(project_id)


async def list_webhooks(request: web.Request) -> web.Response:
    hub = _hub(request)
    project = _project(hub, request.match_info["project"])
    hooks = hub.store.list_webhooks(project.project_id)
    return web.json_response({"webhooks": [webhook_json(h) for h in hooks]})


async def add_webhook(request: web.Request) -> web.Response:
    hub = _hub(request)
    project = _project(hub, request.match_info["project"])
    body = await _json_body(request)
    url, signing_key = body.get("url", ""), body.get("signing_key", "") or ""
    if not isinstance(url, str) or not isinstance(signing_key, str):
        raise InvalidArgument("url and signing_key must be strings", "url")
    hook = await add_webhook_to(hub.store, project, url, signing_key)
    _webhooks_changed(request, project.project_id)
    log.info("webhook %s added to project %s (%s, signed by %s)", hook.webhook_id, project.name,
             webhooks.safe_url(hook.url), hook.signing_key)
    return web.json_response(webhook_json(hook), status=201)


async def remove_webhook(request: web.Request) -> web.Response:
    hub = _hub(request)
    project = _project(hub, request.match_info["project"])
    webhook_id = request.match_info["webhook"]
    if not await hub.store.delete_webhook(project.project_id, webhook_id):
        raise NotFound(f"webhook {webhook_id!r} not found in project {project.name!r}")
    _webhooks_changed(request, project.project_id)
    log.info("webhook %s removed from project %s", webhook_id, project.name)
    return web.json_response({"removed": webhook_id})


def routes() -> list[web.RouteDef]:
    base = "/callboard/v1/admin"
    return [
        web.get(f"{base}/projects", list_projects),
        web.post(f"{base}/projects", create_project),
        web.delete(f"{base}/projects/{{project}}", delete_project),
        web.get(f"{base}/projects/{{project}}/keys", list_keys),
        web.post(f"{base}/projects/{{project}}/keys", add_key),
        web.delete(f"{base}/keys/{{key}}", revoke_key),
        web.get(f"{base}/projects/{{project}}/webhooks", list_webhooks),
        web.post(f"{base}/projects/{{project}}/webhooks", add_webhook),
        web.delete(f"{base}/projects/{{project}}/webhooks/{{webhook}}", remove_webhook),
    ]
