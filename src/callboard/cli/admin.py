"""`callboard admin …`: projects and keys on a server (admin API), or offline on its store (`--db`).

The target is resolved when a command runs, not when the group parses its options, so `--help` on
any subcommand works without a credential.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import http.client
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from callboard.cli import config
from callboard.cli.common import EXIT_USAGE, http_url
from callboard.cli.output import emit_json, fail, table
from callboard.cli.project import add_project, load_config
from callboard.server import admin as admin_api
from callboard.server.app import DEV_ADMIN_TOKEN
from callboard.store.sqlite import SqliteStore

T = TypeVar("T")

ADMIN_FILE = "callboard.db.admin"


@dataclass(frozen=True)
class AdminTarget:
    """Either a running server (url + credential) or a stopped server's database file."""

    url: str = ""
    token: str = ""
    db: str = ""


@dataclass(frozen=True)
class AdminOptions:
    """The `admin` group's options as given; turned into an `AdminTarget` by each command."""

    url: str | None = None
    token: str | None = None
    db: str | None = None
    dev: bool = False


def resolve_target(url: str | None, token: str | None, db: str | None, dev: bool) -> AdminTarget:
    if db:
        return AdminTarget(db=db)
    url = http_url(url or os.environ.get("CALLBOARD_URL") or "http://127.0.0.1:7880").rstrip("/")
    token = token or os.environ.get("CALLBOARD_ADMIN_TOKEN")
    if not token and dev:
        token = DEV_ADMIN_TOKEN
    if not token and Path(ADMIN_FILE).exists():
        try:
            token = Path(ADMIN_FILE).read_text().strip()
        except OSError as exc:
            fail(f"cannot read {ADMIN_FILE}: {exc.strerror or exc}", EXIT_USAGE)
    if not token:
        fail(f"no admin credential: pass --admin-token, set CALLBOARD_ADMIN_TOKEN, run where "
             f"{ADMIN_FILE} is, use --dev for a dev server, or --db PATH on a stopped server",
             EXIT_USAGE)
    return AdminTarget(url=url, token=token)


def call(target: AdminTarget, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One admin API request; any failure ends the command with a one-line error (exit 1)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{target.url}/callboard/v1/admin{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        fail(_http_error(exc))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        fail(f"cannot reach callboard at {target.url}: {reason}")
    except ValueError as exc:  # urllib's "unknown url type" and friends
        fail(f"bad server URL {target.url!r}: {exc}")
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        fail(f"{target.url} answered with something that is not JSON: is it a callboard server?")


def _http_error(exc: urllib.error.HTTPError) -> str:
    try:
        err = json.loads(exc.read())
    except (ValueError, OSError):
        err = None
    if isinstance(err, dict) and "code" in err:
        return f"server said {err.get('code')}: {err.get('msg')}"
    return f"server answered HTTP {exc.code}"


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def offline(target: AdminTarget, work: Callable[[SqliteStore], Awaitable[T]]) -> T:
    if not Path(target.db).exists():
        fail(f"no database at {target.db}")
    # The store logs its own failures; `fail` already says what went wrong, in one line.
    logging.getLogger("callboard").addHandler(logging.NullHandler())

    async def run() -> T:
        store = SqliteStore(target.db)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _check_name(what: str, value: str) -> None:
    """The admin API's rule for names, applied offline too (the server checks it online)."""
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        fail(f"{what} must be 1-64 letters, digits, '-', '_' or '.'", EXIT_USAGE)


def pass_target(f: Callable[..., T]) -> Callable[..., T]:
    """Like click's pass decorators: hands the command its resolved `AdminTarget` first."""

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> T:
        opts = click.get_current_context().find_object(AdminOptions) or AdminOptions()
        target = resolve_target(opts.url, opts.token, opts.db, opts.dev)
        return f(target, *args, **kwargs)

    return run


@click.group()
@click.option("--url", help="Server URL (default $CALLBOARD_URL or http://127.0.0.1:7880).")
@click.option("--admin-token", help="Admin credential (default $CALLBOARD_ADMIN_TOKEN or "
              "./callboard.db.admin).")
@click.option("--db", type=click.Path(dir_okay=False),
              help="Work offline on this database file (server stopped).")
@click.option("--dev", is_flag=True, help="Use the dev server's fixed admin credential.")
@click.pass_context
def admin(ctx: click.Context, url: str | None, admin_token: str | None, db: str | None,
          dev: bool) -> None:
    """Manage projects and API keys on a callboard server."""
    if db and (url or admin_token):
        raise click.UsageError("--db works offline on the file: drop --url/--admin-token")
    ctx.obj = AdminOptions(url, admin_token, db, dev)


@admin.group()
def project() -> None:
    """Projects: tenants with their own keys, rooms, workers and logs."""


@project.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_target
def project_create(target: AdminTarget, name: str, as_json: bool) -> None:
    """Create project NAME."""
    if target.db:
        _check_name("project name", name)

        async def work(store: SqliteStore) -> dict[str, Any]:
            try:
                return admin_api.project_json(await store.create_project(name))
            except ValueError as exc:
                fail(str(exc))
        result = offline(target, work)
    else:
        result = call(target, "POST", "/projects", {"name": name})
    if as_json:
        emit_json(result)
    else:
        click.echo(f"created project {result['name']} ({result['id']})")


@project.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_target
def project_list(target: AdminTarget, as_json: bool) -> None:
    """List projects."""
    if target.db:
        async def work(store: SqliteStore) -> list[dict[str, Any]]:
            return [admin_api.project_json(p) for p in store.list_projects()]
        projects = offline(target, work)
    else:
        projects = call(target, "GET", "/projects")["projects"]
    if as_json:
        emit_json(projects)
        return
    table("projects", ["name", "id", "created"], [(p["name"], p["id"], _when(p["created_at_ms"]))
                                                  for p in projects])


@project.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_target
def project_delete(target: AdminTarget, name: str, yes: bool) -> None:
    """Delete project NAME with all its keys, rooms, dispatches, jobs and logs."""
    if not yes:
        click.confirm(f"delete project {name} and everything in it?", abort=True)
    if target.db:
        async def work(store: SqliteStore) -> None:
            found = store.get_project(name)
            if found is None:
                fail(f"project {name!r} not found")
            await store.delete_project(found.project_id)
        offline(target, work)
    else:
        call(target, "DELETE", f"/projects/{_segment(name)}")
    click.echo(f"deleted project {name}")


@admin.group()
def keys() -> None:
    """API keys: production keys, or keys that belong to one developer."""


@keys.command("add")
@click.argument("project_name", metavar="PROJECT")
@click.option("--developer", default="", help="Issue the key to this developer (isolated "
              "dispatch); omit for a production key.")
@click.option("--save-project", metavar="NAME",
              help="Also add the new key as project NAME of ~/.livekit/cli-config.yaml, for "
                   "use with --project NAME in callboard and lk commands.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_target
def keys_add(target: AdminTarget, project_name: str, developer: str, save_project: str | None,
             as_json: bool) -> None:
    """Add an API key to PROJECT and print URL, key and secret."""
    if save_project is not None:
        _can_save_project(save_project, target)
    if target.db:
        if developer:
            _check_name("developer", developer)

        async def work(store: SqliteStore) -> dict[str, Any]:
            found = store.get_project(project_name)
            if found is None:
                fail(f"project {project_name!r} not found")
            key = await store.add_key(found.project_id, developer=developer)
            return admin_api.key_json(key, with_secret=True, url="")
        result = offline(target, work)
    else:
        result = call(target, "POST", f"/projects/{_segment(project_name)}/keys",
                      {"developer": developer})
    if as_json:
        emit_json(result)
    else:
        who = f"developer {result['developer']}" if result["developer"] else "production"
        click.echo(f"added {who} key to project {project_name}")
        if result.get("url"):
            click.echo(f"LIVEKIT_URL={result['url']}")
        click.echo(f"LIVEKIT_API_KEY={result['key']}")
        click.echo(f"LIVEKIT_API_SECRET={result['secret']}")
    if save_project is not None:  # after printing: the secret is shown whatever happens here
        _save_project(save_project, result)


def _can_save_project(name: str, target: AdminTarget) -> None:
    """Refuse `--save-project` before a key is made, not after."""
    if target.db:
        fail("--save-project needs the server's URL: run it against a server, not --db",
             EXIT_USAGE)
    cfg = load_config()
    if cfg.find(name) is not None:
        fail(f"project {name!r} already exists in {config.display_path(cfg.path)}", EXIT_USAGE)


def _save_project(name: str, key: dict[str, Any]) -> None:
    """The key just made, as a local project of ~/.livekit/cli-config.yaml."""
    url = key.get("url") or ""
    added = add_project(config.Project(name, url, key["key"], key["secret"]), False)
    suffix = ", the default" if added["default"] else ""
    click.echo(f"saved as project {name}{suffix} in {config.display_path(config.config_path())}",
               err=True)


@keys.command("list")
@click.argument("project_name", metavar="PROJECT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_target
def keys_list(target: AdminTarget, project_name: str, as_json: bool) -> None:
    """List PROJECT's keys (secrets are never shown again)."""
    if target.db:
        async def work(store: SqliteStore) -> list[dict[str, Any]]:
            found = store.get_project(project_name)
            if found is None:
                fail(f"project {project_name!r} not found")
            return [admin_api.key_json(k, with_secret=False)
                    for k in store.list_keys(found.project_id, include_revoked=True)]
        result = offline(target, work)
    else:
        result = call(target, "GET", f"/projects/{_segment(project_name)}/keys")["keys"]
    if as_json:
        emit_json(result)
        return
    table(f"keys of {project_name}", ["key", "kind", "developer", "created", "revoked"],
          [(k["key"], k["kind"], k["developer"], _when(k["created_at_ms"]), k["revoked"])
           for k in result])


@keys.command("revoke")
@click.argument("key")
@pass_target
def keys_revoke(target: AdminTarget, key: str) -> None:
    """Revoke KEY: its tokens stop working and its workers are disconnected at once."""
    if target.db:
        async def work(store: SqliteStore) -> None:
            if await store.revoke_key(key) is None:
                fail(f"key {key!r} not found")
        offline(target, work)
        click.echo(f"revoked {key}")
        return
    result = call(target, "DELETE", f"/keys/{_segment(key)}")
    click.echo(f"revoked {key} ({result['workers_disconnected']} workers disconnected)")


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
