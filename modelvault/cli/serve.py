"""``modelvault serve``: the catalog in a browser (the ``web`` extra)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import secrets
import webbrowser
from typing import Any

from modelvault.cli.common import open_catalog, ui
from modelvault.errors import ModelVaultError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
STOP_SECONDS = 10.0  # a run going when the server stops: the time given to hand rows back


def add_serve_command(command: Any) -> None:
    serve = command(
        "serve",
        cmd_serve,
        "show the catalog in a browser: previews, tags, notes, and the work in progress "
        "(needs the web extra: pip install 'modelvault[web]')",
    )
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="the address to listen on (default: 127.0.0.1, this computer only); any other "
        "asks for a token, printed once in the address to open",
    )
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"(default: {DEFAULT_PORT}; 0: any free)"
    )
    serve.add_argument("--open", action="store_true", help="open the page in your browser")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def page_address(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from modelvault.web import build_app
    except ImportError as exc:
        raise ModelVaultError(
            f"the web extra is not installed ({exc.name} is missing): "
            "pip install 'modelvault[web]'."
        ) from None
    db = open_catalog(args)
    token = None if is_loopback(args.host) else secrets.token_urlsafe(24)
    app = build_app(db, host=args.host, token=token)
    try:
        asyncio.run(_serve(args, app, token))
    except KeyboardInterrupt:
        ui(args).say("modelvault: stopped serving.")
    finally:
        from modelvault.migration.manager import MigrationManager

        MigrationManager.for_database(db).close(STOP_SECONDS)
    return 0


async def _serve(args: argparse.Namespace, app: Any, token: str | None) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
        except OSError as exc:
            raise ModelVaultError(
                f"cannot listen on {args.host} port {args.port} ({exc.strerror or exc}): "
                "choose another with --port, or 0 for any free one."
            ) from None
        port = runner.addresses[0][1]
        address = page_address(args.host, port, token)
        # Printed once, on stdout: with a token it is the key to the catalog.
        print(f"modelvault: serving the catalog at {address}", flush=True)
        if args.open:
            webbrowser.open(address)
        await asyncio.Event().wait()  # until Ctrl-C or a signal that stops as it does
    finally:
        await runner.cleanup()


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)
