"""`tha serve`: the SillyTavern-extras talkinghead API over a THA4 student, so SillyTavern's
expressions extension works unchanged, plus a few JSON endpoints of our own.

One thread renders the animator's newest pose as fast as the backend allows (capped at the
target FPS) and keeps the newest PNG; every ``result_feed`` client is sent that PNG at the
target FPS, so a slow renderer re-sends its last frame instead of stalling the stream.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from PIL import Image

from tha.models.character import MODEL_FILE, load_character_model, model_paths
from tha.models.errors import ThaError
from tha.models.image import load_rgba
from tha.models.pose import pose_from_dict, pose_to_dict
from tha.runtime.emotions import load_emotions, parse_emotions
from tha.runtime.lipsync import analyse, read_wav
from tha.runtime.renderer import open_backend
from tha.runtime.sources.animator import Animator, AnimatorSettings, settings_from_dict, settings_to_dict

log = logging.getLogger("tha.serve")

BOUNDARY = "frame"
MAX_JSON_BYTES = 1 << 20
MAX_UPLOAD_BYTES = 20 << 20


@dataclass
class ServeConfig:
    model_dir: Path
    backend: str = "auto"
    device: str = "cpu"
    students: tuple[Path, ...] = ()  # more model dirs (or folders of them) that /load may switch to
    animator: AnimatorSettings = field(default_factory=AnimatorSettings)
    emotions_file: Path | None = None
    microphone: bool = False  # live lip sync from the default audio input


def encode_png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Level 1: a stream wants speed; the size barely changes on flat anime art.
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_key(rgba: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rgba).tobytes()).hexdigest()


def find_students(paths: tuple[Path, ...]) -> dict[str, Path]:
    """image key -> model dir, for every model dir given or directly inside a folder given."""
    found: dict[str, Path] = {}
    for path in paths:
        candidates = [path] if (path / MODEL_FILE).is_file() else sorted(p for p in path.glob("*") if p.is_dir())
        for candidate in candidates:
            if (candidate / MODEL_FILE).is_file():
                try:
                    found[image_key(load_rgba(model_paths(candidate)["character_image_file_name"]))] = candidate
                except ThaError as err:
                    log.warning("skipping student %s: %s", candidate, err)
    return found


class LiveState:
    """The model being served, the animator driving it, and the newest rendered frame."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.emotion_defaults = load_emotions(config.emotions_file)
        self.animator = Animator(config.animator, dict(self.emotion_defaults))
        self.students = find_students((config.model_dir, *config.students))
        self._backend_lock = threading.Lock()
        self.model_dir = config.model_dir
        self.backend = open_backend(config.backend, config.model_dir, config.device)
        rgba = load_rgba(model_paths(config.model_dir)["character_image_file_name"])
        self.latest_png = encode_png(rgba)  # the still image until the first render lands
        self.frames_rendered = 0
        self.last_pose = self.animator.read(time.monotonic())
        self.render_seconds = 0.0
        self.animating = True
        self.sinks: list[Callable[[np.ndarray], None]] = []
        self.microphone = None
        if config.microphone:
            from tha.runtime.lipsync import MicrophoneLevel

            self.microphone = MicrophoneLevel()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._render_loop, name="tha-render", daemon=True)

    def start(self) -> None:
        self.animator.start()
        if self.microphone is not None:
            self.microphone.start()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self.backend.close()
        if self.microphone is not None:
            self.microphone.close()

    def _render_loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            if self.animating:
                try:
                    self._render_one(began)
                except Exception:  # one bad frame must not kill the stream
                    log.exception("rendering a frame failed")
            spare = 1.0 / self.animator.settings.target_fps - (time.monotonic() - began)
            self._stop.wait(max(spare, 0.001))

    def _render_one(self, now: float) -> None:
        if self.microphone is not None:
            self.animator.set_mouth(self.microphone.read())
        pose = self.animator.read(now)
        self.last_pose = pose
        with self._backend_lock:
            rgba = self.backend.render(pose).host()
        self.latest_png = encode_png(rgba)
        self.frames_rendered += 1
        self.render_seconds = time.monotonic() - now
        for sink in self.sinks:
            sink(rgba)

    def load_image(self, data: bytes) -> str:
        """Switch to the trained student of this image if there is one; else keep the model."""
        rgba = load_rgba(data)
        match = self.students.get(image_key(rgba))
        if match is None:
            message = (f"no trained student for this image; keeping {self.model_dir.name} "
                       f"(train one with `tha distill`, then pass it to `tha serve --students`)")
            log.warning(message)
            self.animating = True
            return message
        if match != self.model_dir:
            backend = open_backend(self.config.backend, load_character_model(match), self.config.device)
            with self._backend_lock:
                old, self.backend, self.model_dir = self.backend, backend, match
            old.close()
        self.animating = True
        log.info("loaded %s", match)
        return f"OK: loaded {match.name}"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # lets request.form() parse what was already read
    return body


async def read_json(request: Request, allow_empty: bool = True) -> Any:
    body = await read_body(request, MAX_JSON_BYTES)
    if not body.strip() and allow_empty:
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HTTPException(400, f"body is not valid JSON ({err})") from None


def create_app(state: LiveState) -> FastAPI:
    app = FastAPI(title="tha serve", docs_url=None, redoc_url=None)
    api = "/api/talkinghead"

    @app.exception_handler(ThaError)
    async def _bad_input(request: Request, err: ThaError):
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.post(f"{api}/load")
    async def load(request: Request):
        await read_body(request, MAX_UPLOAD_BYTES)
        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_UPLOAD_BYTES)
        except Exception as err:  # the multipart parser's own errors
            raise HTTPException(400, f"expected a multipart form with a 'file' field ({err})") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "expected a multipart form with a PNG in the 'file' field")
        data = await upload.read()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise HTTPException(415, "the uploaded file is not a PNG; send a 512x512 RGBA PNG")
        message = await asyncio.to_thread(state.load_image, data)
        return PlainTextResponse(message)

    @app.post(f"{api}/load_emotion_templates")
    async def load_emotion_templates(request: Request):
        data = await read_json(request)
        emotions = dict(state.emotion_defaults)
        emotions.update(parse_emotions(data, "emotion templates"))
        state.animator.set_emotions(emotions)
        return PlainTextResponse("OK")

    @app.post(f"{api}/load_animator_settings")
    async def load_animator_settings(request: Request):
        data = await read_json(request)
        # {} resets to what the server started with; keys are laid over that, not over the last load.
        settings, unknown = settings_from_dict(data, base=state.config.animator)
        state.animator.set_settings(settings)
        if unknown:
            log.info("ignored animator settings this server does not have: %s", ", ".join(unknown))
            return PlainTextResponse(f"OK (ignored: {', '.join(unknown)})")
        return PlainTextResponse("OK")

    @app.get(f"{api}/unload")
    async def unload():
        state.animating = False  # the feed keeps showing the last frame, as extras does
        return PlainTextResponse("OK")

    @app.get(f"{api}/start_talking")
    async def start_talking():
        state.animator.start_talking()
        return PlainTextResponse("talking started")

    @app.get(f"{api}/stop_talking")
    async def stop_talking():
        state.animator.stop_talking()
        return PlainTextResponse("talking stopped")

    @app.post(f"{api}/set_emotion")
    async def set_emotion(request: Request):
        data = await read_json(request, allow_empty=False)
        if not isinstance(data, dict) or not isinstance(data.get("emotion_name"), str):
            raise HTTPException(400, 'expected JSON {"emotion_name": "<emotion>"}')
        used = state.animator.set_emotion(data["emotion_name"])
        return PlainTextResponse(f"emotion set to {used}")

    @app.get(f"{api}/result_feed")
    async def result_feed():
        async def parts():
            while True:
                png = state.latest_png
                yield (f"--{BOUNDARY}\r\nContent-Type: image/png\r\nContent-Length: {len(png)}\r\n\r\n"
                       .encode() + png + b"\r\n")
                await asyncio.sleep(1.0 / state.animator.settings.target_fps)

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    @app.post("/api/tha/speak")
    async def speak(request: Request):
        """Lip-sync to a WAV sent as the body, starting now (play the audio alongside)."""
        body = await read_body(request, MAX_UPLOAD_BYTES)
        fps = state.animator.settings.target_fps
        samples, rate = read_wav(body)
        track = analyse(samples, rate, fps)
        state.animator.speak(track, time.monotonic())
        return {"frames": len(track), "seconds": round(track.duration, 3)}

    @app.get("/api/tha/status")
    async def status():
        return {"model": str(state.model_dir), "backend": state.backend.name, "emotion": state.animator.emotion,
                "talking": state.animator.talking, "animating": state.animating,
                "frames_rendered": state.frames_rendered, "last_render_seconds": round(state.render_seconds, 4),
                "students": sorted(str(p) for p in state.students.values()),
                "settings": settings_to_dict(state.animator.settings)}

    @app.get("/api/tha/pose")
    async def get_pose():
        """The pose of the newest rendered frame."""
        return pose_to_dict(state.last_pose)

    @app.post("/api/tha/pose")
    async def set_pose(request: Request):
        """Pin parameters on top of the animation: {"head_x": 0.3}; {} releases them."""
        data = await read_json(request)
        if not isinstance(data, dict):
            raise HTTPException(400, 'expected a JSON object of parameter -> value, e.g. {"head_x": 0.3}')
        pose_from_dict(data, clamp=False)  # refuse out-of-range values with a reason
        state.animator.set_overrides(data)
        return {"pinned": sorted(data)}

    return app


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 5100, virtual_camera: bool = False) -> None:
    """Run until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone on that network can drive this server", host)
    state = LiveState(config)
    camera = None
    if virtual_camera:
        from tha.runtime.virtualcam import VirtualCamera

        camera = VirtualCamera(fps=config.animator.target_fps)
        state.sinks.append(camera.send)
    state.start()
    try:
        uvicorn.run(create_app(state), host=host, port=port, log_level="info")
    finally:
        state.close()
        if camera is not None:
            camera.close()
