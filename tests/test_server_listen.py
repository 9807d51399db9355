"""Listening, shared by `tha serve`, `tha serve-web` and the iFacialMocap receiver
(tha.models.net): the address family, the one-line reason a bind failed, and serve-web stopping
on a signal as `tha serve` does."""
from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tha.models.net import address_family
from tha.runtime.feed_bench import free_port
from cli import THA, assert_one_line_error, tha

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


@pytest.mark.parametrize("host", ["192.0.2.1", "nosuch.invalid"])
def test_serve_on_a_host_this_machine_lacks_names_the_host(host):
    """192.0.2.1 (TEST-NET-1) is no address of this machine: the advice is about --host, not the
    port (it said "pass another --port or --host"), and comes before the model loads."""
    result = tha("serve", DEMO, "--host", host, "--port", free_port(), timeout=120)
    assert_one_line_error(result, f"--host {host} is not an address of this machine", "127.0.0.1", code=2)
    assert "--port" not in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_the_family_is_ipv4_where_a_name_has_both():
    """`localhost` listens on 127.0.0.1, as `tha serve` always did and clients expect, and "" on
    every interface (getaddrinfo refuses "", which serve-web reported as a foreign address)."""
    assert address_family("localhost", 0, socket.SOCK_STREAM) == socket.AF_INET
    assert address_family("", 0, socket.SOCK_STREAM) == socket.AF_INET
    assert address_family("127.0.0.1", 0, socket.SOCK_DGRAM) == socket.AF_INET
    assert address_family("::1", 0, socket.SOCK_STREAM) == socket.AF_INET6


@pytest.fixture()
def tiny_site(tmp_path) -> Path:
    (tmp_path / "index.html").write_text("<html>tha</html>")
    (tmp_path / "tha.json").write_text("{}")
    return tmp_path


def _reset_signals() -> None:
    # a child of a shell's background job starts with SIGINT ignored; tha must meet it as a terminal would
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_web_stops_on_a_signal_as_tha_serve_does(tiny_site, stop):
    """A service stop (SIGTERM) ended serve-web with no word, and Ctrl+C with status 0; `tha serve`
    says it stops and exits 128 + the signal, as every tha command does."""
    port = free_port()
    process = subprocess.Popen([*THA, "serve-web", str(tiny_site), "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_reset_signals)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.read() == b"<html>tha</html>"
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "serve-web did not come up"
                time.sleep(0.2)
    finally:
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + stop, (process.returncode, stderr)
    assert stdout.splitlines()[-1] == "stopped" and "Traceback" not in stderr, (stdout, stderr)


@pytest.mark.parametrize("make, fragments", [
    # each said "run `tha export MODEL --web PATH` first": nonsense for a file, refused for a model
    (lambda root: DEMO, ["is a character model, not an exported site", f"tha export {DEMO} --web OUT",
                         "tha serve-web OUT"]),
    (lambda root: DEMO / "character.png", ["is a file, not an exported site", "tha export MODEL --web OUT"]),
    (lambda root: root / "none", ["does not exist", "tha export MODEL --web OUT"]),
    (lambda root: root, ["not an exported site", "export a page into it with `tha export MODEL --web"]),
])
def test_serve_web_names_what_the_path_is_and_the_real_fix(tmp_path, make, fragments):
    result = tha("serve-web", make(tmp_path), "--port", "0", timeout=120)
    assert_one_line_error(result, *fragments, code=2)


@pytest.mark.parametrize("text, problem", [("{", "is not valid JSON"), ("[]", "is not a JSON object")])
def test_serve_web_refuses_a_site_file_that_does_not_parse(tiny_site, text, problem):
    """A corrupt tha.json (`{`) was served; the page then failed in the browser."""
    (tiny_site / "tha.json").write_text(text)
    result = tha("serve-web", tiny_site, "--port", "0", timeout=120)
    assert_one_line_error(result, "tha.json", problem, f"tha export MODEL --web {tiny_site}", code=2)


@pytest.mark.parametrize("origin", ["not a url", "http://127.0.0.1:8000/", "HTTP://Example.com"])
def test_serve_refuses_an_allowed_origin_no_browser_sends(origin):
    """`--allow-origin "not a url"` was accepted: CORS compares exactly, so it allowed no page."""
    result = tha("serve", DEMO, "--allow-origin", "http://127.0.0.1:8000", "--allow-origin", origin,
                 "--port", free_port(), timeout=120)
    assert_one_line_error(result, "'--allow-origin'", f"'{origin}' is not a web origin", "scheme://host[:port]",
                          code=2)


def test_allowed_origins_as_browsers_send_them_are_taken():
    from tha.runtime.cli import _origins

    origins = ["*", "http://127.0.0.1:8000", "https://example.com", "http://[::1]:5100"]
    assert _origins(origins) == origins
