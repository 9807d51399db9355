"""`tha serve` on loopback, driven over real HTTP exactly as SillyTavern's expressions
extension drives SillyTavern-extras' talkinghead module, plus malformed requests.

The served model is the committed demo student (small, so CPU frames come in seconds)."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
ST_JSON_HEADERS = {"Content-Type": "application/json", "Bypass-Tunnel-Reminder": "bypass"}
STILL = {"blink_strength": 0, "breathing_strength": 0, "sway_macro_strength": 0, "sway_micro_strength": 0,
         "transition_time": 0, "mouth_smoothing": 0}



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", "from tha.runtime.cli import main; main()", "serve",
                                    str(DEMO), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(240):
                try:
                    if client.get("/api/tha/status").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None:
                    pytest.fail(f"tha serve exited early:\n{log_path.read_text()}")
                time.sleep(0.5)
            else:
                pytest.fail(f"tha serve did not come up:\n{log_path.read_text()}")
            yield client, process, log_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def read_parts(client, count: int) -> list[bytes]:
    """``count`` parts of result_feed, split on the boundary as a browser's <img> does."""
    parts: list[bytes] = []
    buffer = b""
    with client.stream("GET", "/api/talkinghead/result_feed") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        for chunk in response.iter_bytes():
            buffer += chunk
            while True:
                start = buffer.find(b"--frame\r\n")
                end = buffer.find(b"--frame\r\n", start + 1)
                if start < 0 or end < 0:
                    break
                head, _, body = buffer[start + len(b"--frame\r\n"): end].partition(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
                assert headers["Content-Type"] == "image/png"
                assert body.endswith(b"\r\n") and int(headers["Content-Length"]) == len(body) - 2
                parts.append(body[:-2])
                buffer = buffer[end:]
            if len(parts) >= count:
                return parts[:count]
    raise AssertionError("result_feed ended early")


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGBA" and image.size == (512, 512)
    return np.asarray(image)


def fresh_frame(client) -> np.ndarray:
    """A frame rendered after this call: wait for two new renders, then read the feed."""
    rendered = client.get("/api/tha/status").json()["frames_rendered"]
    deadline = time.monotonic() + 120
    while client.get("/api/tha/status").json()["frames_rendered"] < rendered + 2:
        assert time.monotonic() < deadline, "no new frame rendered within 120 s"
        time.sleep(0.2)
    return decode(read_parts(client, 1)[0])


def test_sillytavern_session(server, lambda00_dir):
    client, process, log_path = server
    # loadTalkingHead(): the character's talkinghead.png, then its (absent) per-character JSON files.
    png = (DEMO / "character.png").read_bytes()
    reply = client.post("/api/talkinghead/load", files={"file": ("talkinghead.png", png, "image/png")})
    assert reply.status_code == 200 and reply.text.startswith("OK")
    assert client.post("/api/talkinghead/load_emotion_templates", content="{}", headers=ST_JSON_HEADERS).text == "OK"
    assert client.post("/api/talkinghead/load_animator_settings", content="{}", headers=ST_JSON_HEADERS).text == "OK"

    # Idle animation: the feed's frames change over time on their own.
    parts = read_parts(client, 3)
    first = decode(parts[0])
    assert first[0, 0, 3] == 0 and first[256, 256, 3] == 255  # transparent background, opaque character
    later = fresh_frame(client)
    assert np.abs(later.astype(int) - first.astype(int)).max() > 0

    # Hold everything still: the stream then re-sends one identical frame.
    reply = client.post("/api/talkinghead/load_animator_settings", json={**STILL, "postprocessor_chain": []},
                        headers=ST_JSON_HEADERS)
    assert reply.status_code == 200 and "postprocessor_chain" in reply.text
    fresh_frame(client)
    neutral = fresh_frame(client)
    assert len(set(read_parts(client, 3))) == 1

    # set_emotion (the classifier's label) changes the face.
    reply = client.post("/api/talkinghead/set_emotion", json={"emotion_name": "surprise"})
    assert reply.status_code == 200 and "surprise" in reply.text
    surprised = fresh_frame(client)
    face = np.abs(surprised.astype(int) - neutral.astype(int))[80:208, 192:320].mean()
    assert face > 1.0
    assert client.post("/api/talkinghead/set_emotion", json={"emotion_name": "smug"}).text.endswith("neutral")

    # Per-character emotion templates (extras' `_index` spelling) replace a preset.
    templates = {"joy": {"eye_wink_left_index": 1.0, "mouth_aaa_index": 1.0}}
    assert client.post("/api/talkinghead/load_emotion_templates", json=templates,
                       headers=ST_JSON_HEADERS).text == "OK"
    client.post("/api/talkinghead/set_emotion", json={"emotion_name": "neutral"})
    neutral = fresh_frame(client)
    client.post("/api/talkinghead/set_emotion", json={"emotion_name": "joy"})
    joy = fresh_frame(client)
    assert np.abs(joy.astype(int) - neutral.astype(int))[80:208, 192:320].mean() > 1.0
    client.post("/api/talkinghead/set_emotion", json={"emotion_name": "neutral"})

    # Talking moves the mouth while everything else holds still.
    assert client.get("/api/talkinghead/start_talking").status_code == 200
    talking = [fresh_frame(client) for _ in range(3)]
    assert client.get("/api/talkinghead/stop_talking").status_code == 200
    mouth = [f[160:208, 224:288].astype(int) for f in talking]
    assert max(np.abs(a - b).max() for a in mouth for b in mouth) > 0

    # Lip sync from a WAV: a long vowel opens the mouth while it plays.
    closed = fresh_frame(client)
    t = np.arange(16000 * 20) / 16000
    tone = (0.3 * sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12)) * 32767).astype("<i2")
    wav = io.BytesIO()
    with wave.open(wav, "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000), f.writeframes(tone.tobytes())
    reply = client.post("/api/tha/speak", content=wav.getvalue(), headers={"Content-Type": "audio/wav"})
    assert reply.status_code == 200 and reply.json()["seconds"] == pytest.approx(20, abs=0.1)
    speaking = fresh_frame(client)
    assert np.abs(speaking.astype(int) - closed.astype(int))[150:210, 216:296].mean() > 0.3  # still: else 0

    # An image with no trained student: the model stays, the reply and the log say so.
    other = (lambda00_dir / "character.png").read_bytes()
    reply = client.post("/api/talkinghead/load", files={"file": ("talkinghead.png", other, "image/png")})
    assert reply.status_code == 200 and "no trained student" in reply.text
    assert "no trained student" in log_path.read_text()
    assert client.get("/api/tha/status").json()["model"] == str(DEMO)

    assert client.get("/api/talkinghead/unload").status_code == 200
    assert process.poll() is None


def test_own_pose_endpoint(server):
    client, _, _ = server
    png = (DEMO / "character.png").read_bytes()  # (re)start animating, as after an unload
    assert client.post("/api/talkinghead/load", files={"file": ("talkinghead.png", png, "image/png")}).is_success
    client.post("/api/talkinghead/load_animator_settings", json=STILL)
    assert client.post("/api/tha/pose", json={"head_y": 0.5}).status_code == 200
    fresh_frame(client)
    assert client.get("/api/tha/pose").json()["head_y"] == pytest.approx(0.5, abs=1e-4)
    reply = client.post("/api/tha/pose", json={"head_y": 5})
    assert reply.status_code == 400 and "outside" in reply.json()["detail"]
    assert client.post("/api/tha/pose", json={}).status_code == 200


def test_malformed_requests_are_4xx_and_the_stream_survives(server):
    client, process, _ = server
    cases = [
        client.post("/api/talkinghead/set_emotion", content="{not json", headers=ST_JSON_HEADERS),
        client.post("/api/talkinghead/set_emotion", json={"emotion": "joy"}),
        client.post("/api/talkinghead/set_emotion", content=""),
        client.post("/api/talkinghead/load_emotion_templates", json=["joy"]),
        client.post("/api/talkinghead/load_emotion_templates", json={"joy": {"no_such_parameter": 1}}),
        client.post("/api/talkinghead/load_animator_settings", json={"blink_interval_min": "often"}),
        client.post("/api/talkinghead/load", files={"file": ("talkinghead.png", b"GIF89a not a png", "image/png")}),
        client.post("/api/talkinghead/load", files={"image": ("talkinghead.png", b"\x89PNG\r\n\x1a\n", "image/png")}),
        client.post("/api/talkinghead/load", files={"file": ("t.png", b"\x89PNG\r\n\x1a\ntruncated", "image/png")}),
        client.post("/api/talkinghead/load", content=b"plain body", headers={"Content-Type": "text/plain"}),
        client.post("/api/tha/speak", content=b"RIFF not really a wave file"),
        client.post("/api/talkinghead/load_emotion_templates", content=b"{" + b" " * (2 << 20) + b"}",
                    headers=ST_JSON_HEADERS),
    ]
    for reply in cases:
        assert 400 <= reply.status_code < 500, (reply.status_code, reply.text)
        assert reply.json()["detail"]  # a reason, not a bare status
    assert cases[-1].status_code == 413
    assert decode(read_parts(client, 1)[0]).shape == (512, 512, 4)
    assert process.poll() is None
