"""`callboard project …`: the projects of `~/.livekit/cli-config.yaml`, as `lk project` keeps them.

Client side only: these commands never talk to a server. (Projects and keys on a server are
`callboard admin project …` / `callboard admin keys …`.)
"""

from __future__ import annotations

from typing import Any

import click

from callboard.cli import config
from callboard.cli.common import EXIT_USAGE
from callboard.cli.output import emit_json, fail, json_option, table

URL_SCHEMES = ("ws://", "wss://", "http://", "https://")


def load_config() -> config.CliConfig:
    """The config file, or a one-line error (exit 2) when it cannot be used."""
    try:
        return config.load()
    except config.ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def _save(cfg: config.CliConfig) -> None:
    try:
        cfg.save()
    except OSError as exc:
        fail(f"cannot write {config.display_path(cfg.path)}: {exc.strerror or exc}")


def _known(cfg: config.CliConfig, name: str) -> config.Project:
    project = cfg.find(name)
    if project is None:
        names = ", ".join(p.name for p in cfg.projects) or "none"
        fail(f"project {name!r} not found in {config.display_path(cfg.path)} (configured: {names})")
    return project


def _check_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value.startswith(URL_SCHEMES) or len(value.split("://", 1)[1]) == 0:
        raise click.BadParameter(f"{value!r} is not a server URL: use ws(s):// or http(s)://")
    return value


def _check_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("a project name cannot be empty")
    return value


@click.group()
def project() -> None:
    """Projects in ~/.livekit/cli-config.yaml (shared with lk): URL, API key and secret by name.

    Other commands use one with --project NAME, or the default project when no credentials come
    from flags, the environment or --dev.
    """


@project.command("add")
@click.argument("name", callback=_check_name)
@click.option("--url", required=True, callback=_check_url,
              help="Server URL, ws(s):// or http(s)://.")
@click.option("--api-key", required=True, help="API key.")
@click.option("--api-secret", required=True, help="API secret.")
@click.option("--project-id", default="",
              help="Project id (kept for lk; callboard does not need it).")
@click.option("--default", "make_default", is_flag=True,
              help="Make it the default project (the first project added always is).")
@json_option
def project_add(name: str, url: str, api_key: str, api_secret: str, project_id: str,
                make_default: bool, as_json: bool) -> None:
    """Add project NAME to the config file."""
    added = add_project(config.Project(name, url, api_key, api_secret, project_id), make_default)
    if as_json:
        emit_json(added)
        return
    suffix = " (default)" if added["default"] else ""
    click.echo(f"added project {name}{suffix} to {config.display_path(config.config_path())}")


def add_project(project: config.Project, make_default: bool) -> dict[str, Any]:
    """Add `project` to the config file (also for `admin keys add --save-project`)."""
    cfg = load_config()
    if cfg.find(project.name) is not None:
        where = config.display_path(cfg.path)
        fail(f"project {project.name!r} already exists in {where}; remove it first")
    cfg.add(project, make_default)
    _save(cfg)
    return _public(project, cfg.default_project == project.name)


@project.command("list")
@json_option
def project_list(as_json: bool) -> None:
    """List the configured projects (secrets are not shown)."""
    cfg = load_config()
    rows = [_public(p, p.name == cfg.default_project) for p in cfg.projects]
    if as_json:
        emit_json(rows)
        return
    table(f"projects in {config.display_path(cfg.path)}", ["", "name", "url", "api key"],
          [("*" if r["default"] else "", r["name"], r["url"], r["api_key"]) for r in rows])


def _public(p: config.Project, is_default: bool) -> dict[str, Any]:
    return {"name": p.name, "url": p.url, "api_key": p.api_key, "project_id": p.project_id,
            "default": is_default}


@project.command("remove")
@click.argument("name")
@json_option
def project_remove(name: str, as_json: bool) -> None:
    """Remove project NAME from the config file."""
    cfg = load_config()
    _known(cfg, name)
    was_default = cfg.default_project == name
    cfg.remove(name)
    _save(cfg)
    if as_json:
        emit_json({"removed": name, "default_project": cfg.default_project})
        return
    note = " (it was the default: there is none now)" if was_default else ""
    click.echo(f"removed project {name}{note}")


@project.command("set-default")
@click.argument("name")
@json_option
def project_set_default(name: str, as_json: bool) -> None:
    """Make project NAME the default."""
    cfg = load_config()
    _known(cfg, name)
    cfg.set_default(name)
    _save(cfg)
    if as_json:
        emit_json({"default_project": name})
        return
    click.echo(f"default project is now {name}")
