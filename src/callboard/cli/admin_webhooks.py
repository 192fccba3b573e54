"""`callboard admin webhooks add|list|remove`: a project's webhook URLs (admin API, or `--db`).

Deliveries are signed with a production key of the project — the one given with `--signing-key`,
else the project's oldest — so a receiver verifies them with that key and its secret, exactly as
it would LiveKit's (`livekit.api.WebhookReceiver(TokenVerifier(key, secret))`). Importing this
module registers the group on `callboard admin`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from callboard.cli.admin import AdminTarget, admin, call, offline, pass_target
from callboard.cli.output import emit_json, fail, table
from callboard.protocol.errors import ApiError
from callboard.server import admin as admin_api
from callboard.store.base import Project
from callboard.store.sqlite import SqliteStore


@admin.group()
def webhooks() -> None:
    """Webhooks: URLs that receive a project's room, participant and agent job events."""


def _path(project_name: str, *rest: str) -> str:
    return "/".join([f"/projects/{quote(project_name, safe='')}/webhooks",
                     *(quote(r, safe="") for r in rest)])


def _offline_project(store: SqliteStore, name: str) -> Project:
    found = store.get_project(name)
    if found is None:
        fail(f"project {name!r} not found")
    return found


@webhooks.command("add")
@click.argument("project_name", metavar="PROJECT")
@click.argument("url")
@click.option("--signing-key", default="", help="A production API key of PROJECT to sign with "
              "(default: its oldest production key). Developer keys are refused.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_target
def webhooks_add(
    target: AdminTarget, project_name: str, url: str, signing_key: str, as_json: bool
) -> None:
    """Send PROJECT's webhooks to URL."""
    if target.db:
        async def work(store: SqliteStore) -> dict[str, Any]:
            project = _offline_project(store, project_name)
            try:
                hook = await admin_api.add_webhook_to(store, project, url, signing_key)
            except ApiError as exc:
                fail(exc.msg)
            return admin_api.webhook_json(hook)
        result = offline(target, work)
    else:
        result = call(target, "POST", _path(project_name), {"url": url,
                                                             "signing_key": signing_key})
    if as_json:
        emit_json(result)
        return
    click.echo(f"added webhook {result['id']} to project {project_name}: {result['url']} "
               f"(signed with key {result['signing_key']})")


@webhooks.command("list")
@click.argument("project_name", metavar="PROJECT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_target
def webhooks_list(target: AdminTarget, project_name: str, as_json: bool) -> None:
    """List PROJECT's webhooks."""
    if target.db:
        async def work(store: SqliteStore) -> list[dict[str, Any]]:
            project = _offline_project(store, project_name)
            return [admin_api.webhook_json(h) for h in store.list_webhooks(project.project_id)]
        hooks = offline(target, work)
    else:
        hooks = call(target, "GET", _path(project_name))["webhooks"]
    if as_json:
        emit_json(hooks)
        return
    table(f"webhooks of {project_name}", ["id", "url", "signing key"],
          [(h["id"], h["url"], h["signing_key"]) for h in hooks])


@webhooks.command("remove")
@click.argument("project_name", metavar="PROJECT")
@click.argument("webhook_id", metavar="ID")
@pass_target
def webhooks_remove(target: AdminTarget, project_name: str, webhook_id: str) -> None:
    """Stop sending PROJECT's webhooks to webhook ID (events still queued for it are dropped)."""
    if target.db:
        async def work(store: SqliteStore) -> None:
            project = _offline_project(store, project_name)
            if not await store.delete_webhook(project.project_id, webhook_id):
                fail(f"webhook {webhook_id!r} not found in project {project_name!r}")
        offline(target, work)
    else:
        call(target, "DELETE", _path(project_name, webhook_id))
    click.echo(f"removed webhook {webhook_id} from project {project_name}")
