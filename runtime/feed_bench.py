"""`tha bench --feed`: how many distinct frames per second `tha serve`'s result_feed delivers
while the character talks with an emotion set, with and without frames between model frames.
The server runs as a real `tha serve` process and the feed is read over HTTP, as SillyTavern's
<img> reads it."""
from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from tha.models.errors import ThaError

FEED = "/api/talkinghead/result_feed"
WARMUP_S = 8.0  # the first model frames (allocations, face cache) are not what a session sees


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port: int, method: str, path: str, body: dict | None = None) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        return connection.getresponse().read()
    finally:
        connection.close()


def _wait_until_up(port: int, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ThaError(f"tha serve exited with code {process.returncode} before answering")
        try:
            _request(port, "GET", "/api/tha/status")
            return
        except OSError:
            time.sleep(0.5)
    raise ThaError(f"tha serve did not answer within {timeout:.0f} s")


def count_distinct_parts(port: int, seconds: float) -> tuple[int, int]:
    """(parts, distinct parts) of result_feed read for ``seconds``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", FEED)
    response = connection.getresponse()
    parts, previous, buffer = 0, b"", b""
    distinct = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            buffer += response.read1(1 << 16)
            while True:
                start = buffer.find(b"--frame\r\n")
                following = buffer.find(b"--frame\r\n", start + 1)
                if start < 0 or following < 0:
                    break
                digest = hashlib.sha256(buffer[start:following]).digest()
                parts += 1
                distinct += digest != previous  # a new picture, not a re-sent one
                previous = digest
                buffer = buffer[following:]
    finally:
        connection.close()
    return parts, distinct


def feed_fps(model_dir: Path, seconds: float, interpolate: bool, emotion: str = "joy") -> float:
    """Distinct frames per second of the feed while talking with ``emotion``."""
    port = free_port()
    command = [sys.executable, "-c", "from tha.runtime.main import main; main()", "serve", str(model_dir),
               "--port", str(port), *([] if interpolate else ["--no-interpolate"])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(port, process)
        _request(port, "POST", "/api/talkinghead/set_emotion", {"emotion_name": emotion})
        _request(port, "GET", "/api/talkinghead/start_talking")
        time.sleep(WARMUP_S)
        _, distinct = count_distinct_parts(port, seconds)
        return distinct / seconds
    finally:
        process.terminate()
        process.wait(timeout=60)


def measure_feed(model_dir: Path, frames: int) -> list[tuple[str, float]]:
    """Rows (label, ms per distinct frame) for `tha bench`: the feed over ``max(frames, 20)``
    seconds each way."""
    seconds = float(max(frames, 20))
    rows = []
    for interpolate, label in ((True, "serve feed, talking (interpolated)"),
                               (False, "serve feed, talking (--no-interpolate)")):
        fps = feed_fps(model_dir, seconds, interpolate)
        rows.append((label, 1000.0 / fps if fps > 0 else float("inf")))
    return rows
