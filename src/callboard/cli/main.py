"""Entry point of the `callboard` command."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from callboard import __version__
from callboard.cli.admin import admin
from callboard.cli.admin_hosts import project_hosts as _hosts  # noqa: F401  (admin project hosts)
from callboard.cli.admin_webhooks import webhooks as _webhooks  # noqa: F401  (admin webhooks)
from callboard.cli.call import call
from callboard.cli.dispatch import dispatch
from callboard.cli.env import env
from callboard.cli.logs import logs
from callboard.cli.perf import perf
from callboard.cli.project import project
from callboard.cli.room import room
from callboard.cli.token import token
from callboard.cli.usage import usage
from callboard.cli.workers import workers
from callboard.settings import load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="callboard")
def cli() -> None:
    """callboard: a self-hosted, LiveKit-compatible agent dispatch server.

    Start a dev server with `callboard server --dev`, then point livekit-agents workers at it with
    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret.

    The client commands (token, dispatch, room, workers, logs, env, call, perf) take credentials
    like `lk`:
    --project NAME, else --url/--api-key/--api-secret or $CALLBOARD_* / $LIVEKIT_*, else --dev,
    else the default project of ~/.livekit/cli-config.yaml (see `callboard project`).

    Exit codes: 0 ok, 1 the server said no (or could not be reached), 2 usage error.
    """


@cli.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 7880).")
@click.option("--db", help="SQLite database file (default ./callboard.db).")
@click.option("--dev", is_flag=True, default=None,
              help="Ensure a project 'dev' with key devkey / secret secret.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level (default info).")
@click.option("--rtc-node-ip", help="Address to advertise in ICE candidates (1:1 NAT, cloud VM).")
@click.option("--ice-server", "ice_servers", multiple=True,
              help="ICE server handed to clients (repeatable), e.g. turn:user:pass@host:3478.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="TOML file with settings (flags and CALLBOARD_* env override it).")
def server(host: str | None, port: int | None, db: str | None, dev: bool | None,
           log_level: str | None, rtc_node_ip: str | None, ice_servers: tuple[str, ...],
           config: str | None) -> None:
    """Run the server: /agent, /rtc, Twirp, the admin and project APIs, on one port."""
    from callboard.server.app import serve

    flags = {"host": host, "port": port, "db": db, "dev": dev, "log_level": log_level,
             "rtc_node_ip": rtc_node_ip, "ice_servers": ice_servers or None}
    try:
        settings = load_settings(flags, config_file=config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for key in settings.extra:
        logging.getLogger("callboard").warning("config file: unknown setting %r ignored", key)
    try:
        asyncio.run(serve(settings, ready=lambda text: click.echo(text, err=False)))
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


for command in (project, token, dispatch, room, workers, logs, admin, env, call, perf):
    cli.add_command(command)
cli.add_command(usage)


def main() -> None:
    cli()


if __name__ == "__main__":  # `python -m callboard.cli.main`, as the test fixture starts the server
    main()
