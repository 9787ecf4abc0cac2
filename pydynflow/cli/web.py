"""``pydynflow web``: serve the web console (`pydynflow.web`) with uvicorn."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from pathlib import Path

import click

from pydynflow.cli._common import db_option
from pydynflow.daemon import AppImportError, import_apps

__all__ = ["DEFAULT_BIND", "TOKEN_ENV", "is_loopback", "parse_bind", "web"]

DEFAULT_BIND = "127.0.0.1:8765"
TOKEN_ENV = "PYDYNFLOW_WEB_TOKEN"


def parse_bind(value: str) -> tuple[str, int]:
    """Return ``(host, port)`` of ``HOST:PORT`` (``[::1]:8765`` for IPv6).

    Raises:
        ValueError: not HOST:PORT with a port from 1 to 65535.
    """
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Return whether ``host`` only listens on this machine (localhost, 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: whatever it resolves to, others may reach it
        return False


def _token(token_file: Path | None, ctx: click.Context) -> str | None:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--token-file'") from exc
        if not token:
            raise click.BadParameter("the file is empty", ctx=ctx, param_hint="'--token-file'")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


@click.command(short_help="Serve the web console.")
@db_option
@click.option(
    "--bind",
    metavar="HOST:PORT",
    default=DEFAULT_BIND,
    show_default=True,
    help="Where to listen. Any address but a loopback one needs a token.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"A file holding the login token (else ${TOKEN_ENV}).",
)
@click.option(
    "--app",
    "apps",
    metavar="MODULE",
    multiple=True,
    help="A module of Action classes to import, so that their present hooks mask what "
    "the console shows (repeat for several). Without it their input and output are hidden.",
)
@click.option(
    "--metrics-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The --metrics-dir of `pydynflow worker` on this host: /metrics adds its processes' "
    "metrics.",
)
@click.option(
    "--proxy-headers",
    is_flag=True,
    help="Trust X-Forwarded-Proto/For from the proxy at --forwarded-allow-ips (https "
    "detection for Secure cookies).",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    help="The proxies whose X-Forwarded-* headers are trusted (with --proxy-headers).",
)
@click.option(
    "--root-path",
    default="",
    metavar="PATH",
    help="The path prefix a reverse proxy serves the console under (e.g. /dynflow).",
)
@click.option(
    "--secure-cookies/--no-secure-cookies",
    default=None,
    help="Force the Secure flag on cookies (default: when the request came over https).",
)
@click.pass_context
def web(
    ctx: click.Context,
    db_url: str,
    bind: str,
    token_file: Path | None,
    apps: tuple[str, ...],
    metrics_dir: Path | None,
    proxy_headers: bool,
    forwarded_allow_ips: str,
    root_path: str,
    secure_cookies: bool | None,
) -> None:
    """Serve the web console until SIGTERM or SIGINT.

    Operators log in with the token of $PYDYNFLOW_WEB_TOKEN (or --token-file). On a loopback
    address without one, a token is made up and printed; any other address without one is
    refused (exit status 2). The console reads the database and acts through a client
    world: run it on any host that reaches the database.

    Exit status: 0 after SIGTERM or SIGINT; 1 if the database cannot be opened; 2 on a
    usage error.
    """
    import uvicorn

    from pydynflow.web import create_app

    try:
        host, port = parse_bind(bind)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--bind'") from exc
    token = _token(token_file, ctx)
    if token is None:
        if not is_loopback(host):
            raise click.UsageError(
                f"--bind {bind} is reachable from other hosts: set {TOKEN_ENV} or "
                "--token-file first (the console refuses to serve them without a login)",
                ctx=ctx,
            )
        token = secrets.token_urlsafe(24)
        click.echo(f"no {TOKEN_ENV} set: log in with this token: {token}", err=True)
    try:
        import_apps(apps)
    except AppImportError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--app'") from exc
    try:
        app = create_app(
            db=db_url, token=token, metrics_dir=metrics_dir, secure_cookies=secure_cookies
        )
        app.state.console.open()  # fail now (exit 1), not at the first request
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--db'") from exc
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"pydynflow console on http://{shown}:{port}/ ({socket.gethostname()})", err=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path.rstrip("/"),
        timeout_graceful_shutdown=3,
        server_header=False,
        log_level="info",
    )
    uvicorn.Server(config).run()
