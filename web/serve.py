"""The local server for an exported web site (`tha serve-web SITE`): serve it on localhost with the headers that make
it cross-origin isolated (COOP same-origin + COEP require-corp), which the browser demands
before it lets WebAssembly use threads (SharedArrayBuffer)."""
from __future__ import annotations

import functools
import os
import socket
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tha.models.errors import ThaError, foreign_address

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

    def send_head(self):
        """Files only: a directory other than the site's root is 404, never an HTML listing."""
        path = self.translate_path(self.path)
        if os.path.isdir(path) and os.path.realpath(path) != os.path.realpath(self.directory):
            self.send_error(404, "File not found")
            return None
        return super().send_head()

    def list_directory(self, path):  # the root without index.html: no listing either
        self.send_error(404, "File not found")
        return None

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a page load is ~20 requests; the terminal stays readable


def make_server(site: Path, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server for ``site`` (not yet serving: call ``serve_forever``); port 0 picks a free one."""
    if not (site / "index.html").is_file() or not (site / "tha.json").is_file():
        raise ThaError(f"{site} is not an exported site (no index.html and tha.json); "
                       f"run `tha export MODEL --web {site}` first")
    try:
        server_class = _server_class(host, port)
        return server_class((host, port), functools.partial(IsolatedHandler, directory=str(site)))
    except OSError as err:
        raise _listen_error(err, host, port) from None


def _server_class(host: str, port: int) -> type[ThreadingHTTPServer]:
    """ThreadingHTTPServer with the address family of ``host`` (IPv6 for ``::1``; raises gaierror)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return type("IsolatedServer", (ThreadingHTTPServer,), {"address_family": family})


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_error(err: OSError, host: str, port: int) -> ThaError:
    """One line that names the cause: a busy port, or a --host this machine cannot listen on."""
    shown = host_port(host, port)
    reason = err.strerror or str(err)
    if foreign_address(err):
        return ThaError(f"cannot listen on {shown} ({reason}); --host {host} is not an address of this machine: "
                        "give one such as 127.0.0.1")
    return ThaError(f"cannot listen on {shown} ({reason}); pass another --port")
