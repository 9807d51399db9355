"""`tha serve`: the SillyTavern-extras talkinghead API over a THA4 student, so SillyTavern's
expressions extension works unchanged, plus a few JSON endpoints of our own.

One thread renders the animator's newest pose as fast as the backend allows (capped at the
target FPS) and keeps the newest PNG; every ``result_feed`` client is sent that PNG at the
target FPS, so a slow renderer re-sends its last frame instead of stalling the stream.
With a backend that exposes its fields (fastcpu) the render thread poses ahead of the clock and
a display thread shows frames blended between model frames (``tha.runtime.interpolate``).
Each frame is encoded once per format (PNG level / WebP quality, chosen per feed client).
"""
from __future__ import annotations

import asyncio
import hashlib
import io
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
from tha.models.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, parse_json
from tha.models.pose import pose_from_dict, pose_to_dict
from tha.runtime.emotions import load_emotions, parse_emotions
from tha.runtime.interpolate import Timeline, can_interpolate
from tha.runtime.lipsync import analyse, read_wav
from tha.runtime.renderer import open_backend
from tha.runtime.sources.animator import Animator, AnimatorSettings, settings_from_dict, settings_to_dict

log = logging.getLogger("tha.serve")

BOUNDARY = "frame"


@dataclass
class ServeConfig:
    model_dir: Path
    backend: str = "auto"
    device: str = "cpu"
    students: tuple[Path, ...] = ()  # more model dirs (or folders of them) that /load may switch to
    animator: AnimatorSettings = field(default_factory=AnimatorSettings)
    emotions_file: Path | None = None
    microphone: bool = False  # live lip sync from the default audio input
    interpolate: bool = True  # model frames rendered ahead, display-rate frames between (fastcpu)


@dataclass(frozen=True)
class FeedFormat:
    """How result_feed encodes a frame (query parameters ``format``, ``level``, ``quality``)."""
    kind: str = "png"  # png or webp
    level: int = 1  # PNG zlib level 0-9; 1: a stream wants speed, and flat anime art barely shrinks more
    quality: int = 80  # WebP quality 0-100; 100 = lossless

    @property
    def mime(self) -> str:
        return f"image/{self.kind}"


def encode_frame(rgba: np.ndarray, fmt: FeedFormat) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(rgba, "RGBA")
    if fmt.kind == "png":
        image.save(buffer, format="PNG", compress_level=fmt.level)
    else:
        image.save(buffer, format="WEBP", quality=fmt.quality, lossless=fmt.quality == 100, method=0)
    return buffer.getvalue()


class EncodedFrame:
    """One rendered frame and its encodings, each made once however many clients want it."""

    def __init__(self, rgba: np.ndarray):
        self.rgba = rgba
        self._encoded: dict[FeedFormat, bytes] = {}
        self._lock = threading.Lock()

    def get(self, fmt: FeedFormat) -> bytes:
        with self._lock:
            if fmt not in self._encoded:
                self._encoded[fmt] = encode_frame(self.rgba, fmt)
            return self._encoded[fmt]


def feed_format(kind: str, level: int, quality: int) -> FeedFormat:
    if kind not in ("png", "webp"):
        raise ThaError(f"format={kind!r} is not supported; use format=png or format=webp")
    if not 0 <= level <= 9:
        raise ThaError(f"level={level} is out of range; PNG levels are 0 (fastest) to 9 (smallest)")
    if not 0 <= quality <= 100:
        raise ThaError(f"quality={quality} is out of range; WebP quality is 0 to 100 (100 = lossless)")
    return FeedFormat(kind, level, quality)


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
        self.frame = EncodedFrame(rgba)  # the still image until the first render lands
        self.timeline = Timeline(self.backend) if config.interpolate and can_interpolate(self.backend) else None
        self.frames_shown = 0
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
        if self.config.interpolate:  # idle while the backend cannot interpolate (no timeline)
            threading.Thread(target=self._display_loop, name="tha-display", daemon=True).start()
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
        timeline = self.timeline
        if timeline is not None and timeline.backend is self.backend:
            with self._backend_lock:
                self.last_pose = timeline.render_ahead(self.animator, now, self.render_seconds,
                                                       1.0 / self.animator.settings.target_fps)
            self.frames_rendered += 1
            self.render_seconds = time.monotonic() - now
            return
        pose = self.animator.read(now)
        self.last_pose = pose
        with self._backend_lock:
            rgba = self.backend.render(pose).host()
        self.show(rgba)
        self.frames_rendered += 1
        self.render_seconds = time.monotonic() - now

    def _display_loop(self) -> None:
        """Display-rate frames from the timeline the render loop fills ahead of the clock."""
        while not self._stop.is_set():
            began = time.monotonic()
            timeline = self.timeline
            if self.animating and timeline is not None:
                # No backend lock: a blend needs only the timeline's own frames and constants,
                # and must not wait for the model frame being rendered meanwhile.
                try:
                    shown = timeline.frame_at(began)
                    rgba = None if shown is None else shown[0]
                    if rgba is not None and not np.array_equal(rgba, self.frame.rgba):
                        self.show(rgba)
                        self.frames_shown += 1
                except Exception:  # one bad frame must not kill the stream
                    log.exception("showing a frame failed")
            spare = 1.0 / self.animator.settings.target_fps - (time.monotonic() - began)
            self._stop.wait(max(spare, 0.001))

    def show(self, rgba: np.ndarray) -> None:
        self.frame = EncodedFrame(rgba)  # encoded on demand, once per format (feed clients)
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
                self.timeline = Timeline(backend) if self.config.interpolate and can_interpolate(backend) else None
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
    try:  # size, depth and digits limited before parsing (tha.models.limits); off the loop, as
        # the depth scan of a 1 MB body takes a fifth of a second
        return await asyncio.to_thread(parse_json, body, "body")
    except ThaError as err:
        raise HTTPException(400, str(err)) from None


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
    async def result_feed(format: str = "png", level: int = 1, quality: int = 80):
        fmt = feed_format(format, level, quality)

        async def parts():
            while True:
                data = await asyncio.to_thread(state.frame.get, fmt)
                yield (f"--{BOUNDARY}\r\nContent-Type: {fmt.mime}\r\nContent-Length: {len(data)}\r\n\r\n"
                       .encode() + data + b"\r\n")
                await asyncio.sleep(1.0 / state.animator.settings.target_fps)

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    @app.post("/api/tha/speak")
    async def speak(request: Request):
        """Lip-sync to a WAV sent as the body, starting now (play the audio alongside)."""
        body = await read_body(request, MAX_UPLOAD_BYTES)
        fps = state.animator.settings.target_fps
        # Off the event loop (status and the feed keep answering), bounded by the audio limits
        # read_wav checks from the header before any analysis.
        track = await asyncio.to_thread(lambda: analyse(*read_wav(body), fps))
        state.animator.speak(track, time.monotonic())
        return {"frames": len(track), "seconds": round(track.duration, 3)}

    @app.get("/api/tha/status")
    async def status():
        return {"model": str(state.model_dir), "backend": state.backend.name, "emotion": state.animator.emotion,
                "talking": state.animator.talking, "animating": state.animating,
                "frames_rendered": state.frames_rendered, "frames_shown": state.frames_shown,
                "last_render_seconds": round(state.render_seconds, 4),
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
