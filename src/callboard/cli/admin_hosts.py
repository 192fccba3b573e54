"""`callboard admin project hosts PROJECT`: the hosts a project marked as production or laptops.

Crosstalk detection (server/crosstalk.py) uses them: production hosts may share a key among
themselves; a pool mixing production and other hosts, or one key used from several unmarked hosts,
is reported. Without role options the command shows the marks; `--production HOST` (repeatable)
replaces the production list, `--laptop HOST` the laptop list, `--clear` empties both. Importing
this module registers the command on `callboard admin project`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from callboard.cli.admin import AdminTarget, call, offline, pass_target, project
from callboard.cli.output import emit_json, fail, table
from callboard.store.sqlite import SqliteStore


@project.command("hosts")
@click.argument("project_name", metavar="PROJECT")
@click.option("--production", multiple=True, metavar="HOST", help="A production host (repeat).")
@click.option("--laptop", multiple=True, metavar="HOST", help="A developer's machine (repeat).")
@click.option("--clear", is_flag=True, help="Forget every mark first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_target
def project_hosts(target: AdminTarget, project_name: str, production: tuple[str, ...],
                  laptop: tuple[str, ...], clear: bool, as_json: bool) -> None:
    """Show or mark PROJECT's hosts as production or laptops (for crosstalk detection)."""
    body: dict[str, list[str]] = {"production": [], "laptop": []} if clear else {}
    if production:
        body["production"] = list(production)
    if laptop:
        body["laptop"] = list(laptop)
    hosts = _offline(target, project_name, body) if target.db else _online(
        target, project_name, body)
    if as_json:
        emit_json(hosts)
        return
    table(f"hosts of {project_name}", ["host", "role"], sorted(hosts.items()))


def _online(target: AdminTarget, name: str, body: dict[str, list[str]]) -> dict[str, str]:
    path = f"/projects/{quote(name, safe='')}/hosts"
    answer: dict[str, Any] = call(target, "PUT" if body else "GET", path, body or None)
    return dict(answer["hosts"])


def _offline(target: AdminTarget, name: str, body: dict[str, list[str]]) -> dict[str, str]:
    async def work(store: SqliteStore) -> dict[str, str]:
        found = store.get_project(name)
        if found is None:
            fail(f"project {name!r} not found")
        for role, hosts in body.items():
            await store.set_project_hosts(found.project_id, role, sorted(set(hosts)))
        return store.project_hosts(found.project_id)

    return offline(target, work)
