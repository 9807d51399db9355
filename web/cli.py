"""`tha serve-web SITE`: the web page's local server (the page itself is `tha export --web`)."""
from __future__ import annotations

from pathlib import Path

import typer


def serve_web(
    site: Path = typer.Argument(..., help="A directory written by `tha export MODEL --web SITE`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; loopback keeps it private."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port; 0 picks a free one."),
) -> None:
    """Serve an exported web page on localhost.

    Cross-origin isolated (COOP/COEP), so WebAssembly runs threaded."""
    from tha.web.serve import make_server, serve_until_stopped, site_url

    server = make_server(site, host, port)
    typer.echo(f"serving {site} at {site_url(host, server)} (Ctrl+C stops)")
    signum = serve_until_stopped(server)
    typer.echo("stopped")
    raise typer.Exit(128 + signum)  # as `tha serve` and every tha command end on a signal


def register(app: typer.Typer) -> None:
    app.command("serve-web")(serve_web)
