"""`tha serve-web SITE`: the web page's local server (the page itself is `tha export --web`)."""
from __future__ import annotations

import typer

from tha.web.serve import serve_web


def register(app: typer.Typer) -> None:
    # serve_web's docstring is one long sentence; the command list wants a short one.
    app.command("serve-web", short_help="Serve an exported web page on localhost.")(serve_web)
