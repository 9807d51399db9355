"""The local server for an exported web site (`tha serve-web SITE`): serve it on localhost with the headers that make
it cross-origin isolated (COOP same-origin + COEP require-corp), which the browser demands
before it lets WebAssembly use threads (SharedArrayBuffer)."""
from __future__ import annotations

import functools
import os
import signal
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tha.models.errors import ThaError
from tha.models.net import address_family, host_port, listen_error

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


# What marks a folder as an exported page (tha.web.build writes it; defined here, where no torch loads).
SITE_FILE = "tha.json"
EXPORT_HINT = "export a page with `tha export MODEL --web OUT`, then `tha serve-web OUT`"


def check_site(site: Path) -> None:
    """Refuse, naming what ``site`` is instead, a path that is not a page `tha export --web`
    wrote, and a site whose tha.json does not parse (the page would fail in the browser)."""
    from tha.models.files import read_json

    if not site.exists():
        raise ThaError(f"{site} does not exist; {EXPORT_HINT}")
    if not site.is_dir():
        raise ThaError(f"{site} is a file, not an exported site (a folder); {EXPORT_HINT}")
    if not (site / "index.html").is_file() or not (site / SITE_FILE).is_file():
        from tha.models.character import MODEL_FILE  # loads torch: only on this path

        if (site / MODEL_FILE).is_file():
            raise ThaError(f"{site} is a character model, not an exported site; export its page with "
                           f"`tha export {site} --web OUT`, then `tha serve-web OUT`")
        # an empty folder can take the export itself; any other would be refused by it
        hint = (f"export a page into it with `tha export MODEL --web {site}`, then `tha serve-web {site}`"
                if not any(site.iterdir()) else EXPORT_HINT)
        raise ThaError(f"{site} is not an exported site (no index.html and {SITE_FILE}); {hint}")
    try:
        definition = read_json(site / SITE_FILE, "site file")
    except ThaError as err:
        raise ThaError(f"{err}; export the page again with `tha export MODEL --web {site}`") from None
    if not isinstance(definition, dict):
        raise ThaError(f"site file {site / SITE_FILE} is not a JSON object; export the page again with "
                       f"`tha export MODEL --web {site}`")


def make_server(site: Path, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server for ``site`` (not yet serving: call ``serve_forever``); port 0 picks a free one."""
    check_site(site)
    try:
        server_class = _server_class(host, port)
        return server_class((host, port), functools.partial(IsolatedHandler, directory=str(site)))
    except OSError as err:
        raise listen_error(err, host, port) from None


def _server_class(host: str, port: int) -> type[ThreadingHTTPServer]:
    """ThreadingHTTPServer with the address family of ``host`` (IPv6 for ``::1``; raises gaierror)."""
    family = address_family(host, port, socket.SOCK_STREAM)
    return type("IsolatedServer", (ThreadingHTTPServer,), {"address_family": family})


def site_url(host: str, server: ThreadingHTTPServer) -> str:
    """The page's address: ``host`` as given, with the port the server got (--port 0 picks one)."""
    return f"http://{host_port(host, server.server_address[1])}/"


def serve_until_stopped(server: ThreadingHTTPServer) -> int:
    """Serve until SIGINT or SIGTERM, then close the server; the signal's number, so that the
    command can say it stopped and exit 128 + the signal, as `tha serve` does. The signal stops
    the loop between requests instead of raising inside it."""
    received: list[int] = []

    def stop(signum: int, frame) -> None:
        received.append(signum)
        # shutdown() waits for serve_forever to return, and this handler runs in its thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
    return received[0]
