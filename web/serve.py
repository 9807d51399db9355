"""The local server for an exported web site (`tha serve-web SITE`): serve it on localhost with the headers that make
it cross-origin isolated (COOP same-origin + COEP require-corp), which the browser demands
before it lets WebAssembly use threads (SharedArrayBuffer)."""
from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tha.models.errors import ThaError

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


class IsolatedHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
                      ".json": "application/json", ".data": "application/octet-stream"}

    def end_headers(self) -> None:
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a page load is ~20 requests; the terminal stays readable


def make_server(site: Path, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server for ``site`` (not yet serving: call ``serve_forever``); port 0 picks a free one."""
    if not (site / "index.html").is_file() or not (site / "tha.json").is_file():
        raise ThaError(f"{site} is not an exported site (no index.html and tha.json); "
                       f"run `tha export MODEL --web {site}` first")
    try:
        return ThreadingHTTPServer((host, port), functools.partial(IsolatedHandler, directory=str(site)))
    except OSError as err:
        raise ThaError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port") from None
