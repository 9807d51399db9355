"""`tha serve` on loopback, driven over real HTTP exactly as SillyTavern's expressions
extension drives SillyTavern-extras' talkinghead module, plus malformed requests.

The served model is the committed demo student (small, so CPU frames come in seconds)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tha.runtime.feed_bench import free_port

httpx = pytest.importorskip("httpx")

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
ST_JSON_HEADERS = {"Content-Type": "application/json", "Bypass-Tunnel-Reminder": "bypass"}
STILL = {"blink_strength": 0, "breathing_strength": 0, "sway_macro_strength": 0, "sway_micro_strength": 0,
         "transition_time": 0, "mouth_smoothing": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", "from tha.runtime.main import main; main()", "serve",
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
    """``count`` PNG parts of result_feed as SillyTavern's <img> asks for it (no query)."""
    parts = feed_parts(client, "", count)
    assert all(kind == "image/png" for kind, _ in parts)
    return [body for _, body in parts]


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGBA" and image.size == (512, 512)
    return np.asarray(image)


def fresh_frame(client) -> np.ndarray:
    """A frame rendered after this call: wait for four new renders (the server poses two model
    frames ahead of the clock and shows frames between them), then read the feed."""
    rendered = client.get("/api/tha/status").json()["frames_rendered"]
    deadline = time.monotonic() + 120
    while client.get("/api/tha/status").json()["frames_rendered"] < rendered + 4:
        assert time.monotonic() < deadline, "no new frame rendered within 120 s"
        time.sleep(0.2)
    return decode(read_parts(client, 1)[0])


def test_sillytavern_session(server, lambda00_dir):
    client, process, log_path = server
    address = f"http://127.0.0.1:{client.base_url.port}/"
    assert f"serving {address} (SillyTavern: set the Extras URL to it)" in log_path.read_text()
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


def test_an_image_that_cannot_be_a_character_keeps_the_model_with_the_reason(server):
    """An RGB talkinghead.png (or one of another size) is a valid upload that no student can match:
    200 with the reason, as extras answers OK (SillyTavern sends the character's templates only
    after an OK); the feed goes on."""
    client, process, _ = server
    rgb = io.BytesIO()
    Image.open(DEMO / "character.png").convert("RGB").save(rgb, format="PNG")
    reply = client.post("/api/talkinghead/load", files={"file": ("talkinghead.png", rgb.getvalue(), "image/png")})
    assert reply.status_code == 200 and "no alpha" in reply.text and "keeping demo" in reply.text, reply.text
    assert decode(read_parts(client, 1)[0]).shape == (512, 512, 4) and process.poll() is None


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
    too_large = cases.pop()
    assert too_large.status_code == 413  # refused before reading, naming the limit
    assert "over this endpoint's limit of 1 MB" in too_large.json()["detail"]
    for reply in cases:
        assert 400 <= reply.status_code < 500, (reply.status_code, reply.text)
        assert reply.json()["detail"]  # a reason, not a bare status
    assert decode(read_parts(client, 1)[0]).shape == (512, 512, 4)
    assert process.poll() is None


def wav_bytes(rate: int, frames: int, width: int = 2, declared_rate: int | None = None) -> bytes:
    """A mono PCM WAV of ``frames`` quiet samples; ``declared_rate`` rewrites the header's rate
    afterwards (the wave module refuses to write 0 Hz, a hostile client does not)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1), f.setsampwidth(width), f.setframerate(rate)
        f.writeframes(bytes([0x80 if width == 1 else 0]) * (frames * width))
    data = bytearray(buffer.getvalue())
    if declared_rate is not None:
        data[24:28] = declared_rate.to_bytes(4, "little")
        data[28:32] = (declared_rate * width).to_bytes(4, "little")
    return bytes(data)


def png_declaring(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))


def test_hostile_requests_are_refused_by_the_limits(server):
    """Each limit of tha.models.limits, hit over HTTP: a 4xx with a reason, and the server then
    serves status and the feed as before."""
    client, process, _ = server
    speak = "/api/tha/speak"
    cases = {
        "1 Hz WAV": (client.post(speak, content=wav_bytes(1, 20000)), "sample rate"),
        "0 Hz WAV": (client.post(speak, content=wav_bytes(8000, 100, declared_rate=0)), "not an audio file"),
        "11 minutes": (client.post(speak, content=wav_bytes(4000, 4000 * 660, width=1)), "over the limit"),
        "13000x13000 PNG": (client.post("/api/talkinghead/load",
                                        files={"file": ("t.png", png_declaring(13000, 13000), "image/png")}),
                            "pixel limit"),
        "target_fps 1e6": (client.post("/api/talkinghead/load_animator_settings", json={"target_fps": 1e6}),
                           "target_fps"),
        "deep JSON": (client.post("/api/tha/pose", content="[" * 50000 + "]" * 50000,
                                  headers=ST_JSON_HEADERS), "levels deep"),
        "huge integer": (client.post("/api/tha/pose", content='{"head_x": ' + "9" * 5000 + "}",
                                     headers=ST_JSON_HEADERS), "not valid JSON"),
        "string value": (client.post("/api/tha/pose", json={"head_x": "0.5"}), "valid number"),
        "boolean value": (client.post("/api/tha/pose", json={"head_x": True}), "valid number"),
    }
    for name, (reply, needle) in cases.items():
        assert 400 <= reply.status_code < 500, (name, reply.status_code, reply.text)
        assert needle in reply.json()["detail"], (name, reply.json())
    status = client.get("/api/tha/status")
    assert status.status_code == 200 and status.json()["settings"]["target_fps"] <= 240
    assert decode(read_parts(client, 1)[0]).shape == (512, 512, 4)
    assert process.poll() is None


def test_status_answers_while_the_slowest_request_runs(server):
    """The costliest request the limits allow (a WAV filling the upload limit at the highest
    rate, analysed at the highest frame rate) runs off the event loop: status keeps answering
    from a second real client until the speak reply arrives, none waiting for the analysis
    (with the analysis on the event loop, one status request waits out most of /speak, and
    none completes meanwhile)."""
    import threading

    from tha.models.limits import AUDIO_RATE_RANGE, FPS_RANGE, MAX_UPLOAD_BYTES

    client, process, _ = server
    base = str(client.base_url)
    assert client.post("/api/talkinghead/load_animator_settings", json={"target_fps": FPS_RANGE[1]}).is_success
    rate = AUDIO_RATE_RANGE[1]
    body = wav_bytes(rate, MAX_UPLOAD_BYTES - 1000, width=1)
    replies: list = []
    sender = threading.Thread(target=lambda: replies.append(httpx.post(base + "/api/tha/speak", content=body,
                                                                        timeout=300)))
    latencies: list[float] = []  # of every status request sent while /speak ran
    during = 0  # replies that came before the speak reply
    try:
        began = time.monotonic()
        sender.start()
        with httpx.Client(base_url=base, timeout=300) as other:
            while sender.is_alive():
                start = time.monotonic()
                assert other.get("/api/tha/status").status_code == 200
                latencies.append(time.monotonic() - start)
                during += sender.is_alive()
                time.sleep(0.05)
        sender.join()
        speak_s = time.monotonic() - began
    finally:
        client.post("/api/talkinghead/load_animator_settings", json={})
    assert replies and replies[0].status_code == 200, replies
    assert replies[0].json()["seconds"] == pytest.approx((MAX_UPLOAD_BYTES - 1000) / rate, abs=0.1)
    print(f"\n{during} status replies during /speak ({speak_s:.1f} s), slowest {max(latencies, default=0):.3f} s")
    assert during >= 5  # with the analysis on the event loop, none completes meanwhile
    # No reply waited out the analysis: each took a small part of the time /speak took (measured
    # 0.05-0.07 s of 7-9 s on a loaded 2-core Xeon; analysis on the event loop: 7.9 s of 8.4 s),
    # two times of the same machine at the same moment, whatever its speed.
    assert max(latencies) < speak_s / 4, (max(latencies), speak_s)
    assert process.poll() is None


def feed_parts(client, query: str, count: int) -> list[tuple[str, bytes]]:
    """``count`` (content type, body) parts of result_feed with a query string, split on the
    boundary as a browser's <img> does."""
    parts: list[tuple[str, bytes]] = []
    buffer = b""
    with client.stream("GET", f"/api/talkinghead/result_feed?{query}") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        for chunk in response.iter_bytes():
            buffer += chunk
            while (start := buffer.find(b"--frame\r\n")) >= 0 and (end := buffer.find(b"--frame\r\n", start + 1)) >= 0:
                head, _, body = buffer[start + len(b"--frame\r\n"): end].partition(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
                assert body.endswith(b"\r\n") and int(headers["Content-Length"]) == len(body) - 2
                parts.append((headers["Content-Type"], body[:-2]))
                buffer = buffer[end:]
            if len(parts) >= count:
                return parts[:count]
    raise AssertionError("result_feed ended early")


def test_feed_formats_and_one_encoding_per_frame(server):
    client, process, _ = server
    png = fresh_frame(client)
    # Lossless WebP decodes to the same RGBA a PNG part carries (the frame may move on meanwhile:
    # compare a WebP part with a PNG part of the same frame by asking for both back to back).
    (kind, webp), = feed_parts(client, "format=webp&quality=100", 1)
    assert kind == "image/webp"
    image = Image.open(io.BytesIO(webp))
    assert image.format == "WEBP" and image.size == (512, 512)
    lossless = np.asarray(image.convert("RGBA"))
    assert lossless[0, 0, 3] == 0 and lossless[256, 256, 3] == 255
    assert np.abs(lossless.astype(int) - png.astype(int)).mean() < 8  # same character, maybe a later pose
    (kind, lossy), = feed_parts(client, "format=webp&quality=60", 1)
    assert kind == "image/webp" and len(lossy) < len(webp)
    (kind, stored), = feed_parts(client, "level=0", 1)
    stored_image = Image.open(io.BytesIO(stored))
    assert kind == "image/png" and stored_image.format == "PNG" and stored_image.mode == "RGBA"
    # The feed re-sends a frame it already encoded: byte-identical parts, never more distinct
    # parts than frames rendered meanwhile (+1 for the frame showing when reading began).
    def frames_made() -> int:  # model frames and frames blended between them
        status = client.get("/api/tha/status").json()
        return status["frames_rendered"] + status["frames_shown"]

    before = frames_made()
    parts = feed_parts(client, "format=webp", 12)
    after = frames_made()
    assert len({body for _, body in parts}) <= after - before + 1
    for query, word in (("format=gif", "format"), ("level=12", "level"), ("quality=101", "quality")):
        reply = client.get(f"/api/talkinghead/result_feed?{query}")
        assert reply.status_code == 400 and word in reply.text, reply.text
    assert process.poll() is None


def test_feed_bench_counts_the_parts_a_client_receives(server):
    """`tha bench --feed` reads the real stream: every part counted, a re-sent picture not
    counted as a new one."""
    from tha.runtime.feed_bench import count_distinct_parts

    client, _, _ = server
    # Sent at the target FPS (25) whatever the render speed; a loaded machine sends fewer a second,
    # so read two-second spells until ten parts came (or a minute passed).
    spells: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    while sum(parts for parts, _ in spells) < 10 and time.monotonic() < deadline:
        spells.append(count_distinct_parts(client.base_url.port, 2.0))
    assert sum(parts for parts, _ in spells) >= 10, spells
    assert all(min(parts, 1) <= distinct <= parts for parts, distinct in spells), spells


def test_ctrl_c_ends_open_feeds_and_stops(server):
    """Last in this file: it stops the server. SillyTavern keeps result_feed open as long as its
    tab is; Ctrl+C used to wait on that stream for ever. Now the stream ends and the server exits."""
    import signal
    import threading

    client, process, log_path = server
    ended: list[str] = []
    opened = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=client.base_url, timeout=60) as viewer:
            with viewer.stream("GET", "/api/talkinghead/result_feed") as response:
                for _ in response.iter_bytes():
                    opened.set()
        ended.append("cleanly")  # the multipart stream was closed by the server, not broken

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert opened.wait(60), "result_feed sent nothing within 60 s"  # the stream is open and sending
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    reader.join(timeout=60)
    log = log_path.read_text()
    assert ended == ["cleanly"] and "Application shutdown complete" in log
    assert "CancelledError" not in log and "Traceback" not in log, log[-2000:]
