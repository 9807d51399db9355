"""`tha serve`: the SillyTavern-extras talkinghead API over a THA4 student, so SillyTavern's
expressions extension works unchanged, plus a few JSON endpoints of our own.

The live render loop (``tha.runtime.render_loop``, the viewer's too) turns the animator's
poses into frames, capped at the target FPS, posing ahead and blending between model frames
where the backend allows (fastcpu); the newest frame is kept, and every ``result_feed`` client
is sent it at the target FPS, so a slow renderer re-sends its last frame instead of stalling
the stream. Each frame is encoded once per format (PNG level / WebP quality, chosen per feed
client), and only when a client asks.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import socket
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Coroutine

import numpy as np
from fastapi import Body, FastAPI, File, HTTPException, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, Field, StrictFloat

from tha.models.character import MODEL_FILE, load_character_model, model_paths
from tha.models.errors import ThaError
from tha.models.image import load_rgba, open_png, to_rgba_array
from tha.models.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, parse_json
from tha.models.pose import pose_from_dict, pose_to_dict
from tha.runtime.classify import EmotionClassifier
from tha.runtime.emotions import load_emotions, parse_emotions
from tha.runtime.lipsync import AUDIO_FORMATS, analyse, read_wav
from tha.runtime.render_loop import LoopOptions, Rendered, RenderLoop
from tha.runtime.renderer import open_backend
from tha.runtime.sources.animator import Animator, AnimatorSettings, settings_from_dict, settings_to_dict
from tha.runtime.sources.base import PoseSource

log = logging.getLogger("tha.serve")

BOUNDARY = "frame"
GRACEFUL_SHUTDOWN_S = 2.0  # seconds open streams get to finish when the server stops


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
    precision: str | None = None  # fp16 / fp32 for a backend that offers both (cuda); None: its default
    # Web pages that may call the API: SillyTavern runs in the browser on another origin (its own
    # port), so without CORS it cannot read a reply or send a JSON body. Extras allows every origin.
    allow_origins: tuple[str, ...] = ("*",)
    # A text-classification model (hub name or folder) for extras' `classify` module: chat text ->
    # emotion (tha.runtime.classify); None: the module is not offered.
    classify_model: str | None = None


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
        if not path.is_dir():
            raise ThaError(f"--students {path}: no such folder; give model directories or folders of them")
        candidates = [path] if (path / MODEL_FILE).is_file() else sorted(p for p in path.glob("*") if p.is_dir())
        if not any((candidate / MODEL_FILE).is_file() for candidate in candidates):
            log.warning("--students %s: no character model (%s) in it or in its folders", path, MODEL_FILE)
        for candidate in candidates:
            if (candidate / MODEL_FILE).is_file():
                try:
                    found[image_key(load_rgba(model_paths(candidate)["character_image_file_name"]))] = candidate
                except ThaError as err:
                    log.warning("skipping student %s: %s", candidate, err)
    return found


class ListeningAnimator(PoseSource):
    """The animator with its mouth following the microphone's live level."""

    def __init__(self, animator: Animator, microphone):
        self.animator, self.microphone = animator, microphone
        self.name, self.predictable = animator.name, animator.predictable

    def start(self) -> None:
        self.animator.start()
        self.microphone.start()

    def read(self, now: float) -> np.ndarray:
        self.animator.set_mouth(self.microphone.read())
        return self.animator.read(now)

    def close(self) -> None:
        self.microphone.close()
        self.animator.close()


class LiveState:
    """The model being served, the animator driving it, and the newest frame, which the live
    render loop (``tha.runtime.render_loop``) keeps fresh."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.emotion_defaults = load_emotions(config.emotions_file)
        self.animator = Animator(config.animator, dict(self.emotion_defaults))
        self.source: PoseSource = self.animator
        if config.microphone:
            from tha.runtime.lipsync import MicrophoneLevel

            self.source = ListeningAnimator(self.animator, MicrophoneLevel())
        # the model first: its own error, before it is searched as one of the students
        rgba = load_rgba(model_paths(config.model_dir)["character_image_file_name"])
        self.students = find_students((config.model_dir, *config.students))
        self.classifier = EmotionClassifier(config.classify_model) if config.classify_model else None
        self.model_dir = config.model_dir
        self.frame = EncodedFrame(rgba)  # the still image until the first render lands
        self.frames_shown = 0
        self.stopping = threading.Event()  # set as the server begins to stop: feed streams end
        self.sinks: list[Callable[[np.ndarray], None]] = []
        self._swap = threading.Lock()
        self._finished_frames = 0  # model frames of loops already replaced
        self.loop = self._loop(config.model_dir)

    def _loop(self, model) -> RenderLoop:
        """A render loop (not started) over a new backend for ``model`` (a directory or loaded)."""
        c = self.config
        backend = open_backend(c.backend, model, c.device, precision=c.precision)
        fps = self.animator.settings.target_fps
        options = LoopOptions(interpolate=c.interpolate, display_fps=fps, max_fps=fps, keep_going=True)
        return RenderLoop(backend, self.source, options, sinks=(self._show,))

    @property
    def backend(self):
        return self.loop.backend

    @property
    def animating(self) -> bool:
        return not self.loop.paused

    @property
    def frames_rendered(self) -> int:
        return self._finished_frames + self.loop.model_frames

    @property
    def last_pose(self) -> np.ndarray:
        latest = self.loop.latest()
        return self.animator.read(time.monotonic()) if latest is None else latest.pose

    def start(self) -> None:
        self.source.start()
        self.loop.start()

    def close(self) -> None:
        self.loop.stop()
        self.loop.backend.close()
        self.source.close()

    def pause(self) -> None:
        """The feed keeps showing the last frame, as extras does after an unload."""
        self.loop.pause()

    def retime(self) -> None:
        self.loop.retime(self.animator.settings.target_fps)

    def _show(self, rendered: Rendered) -> None:
        rgba = rendered.frame.host()
        if np.array_equal(rgba, self.frame.rgba):  # a held frame: nothing new to encode or send
            return
        self.frame = EncodedFrame(rgba)  # encoded on demand, once per format (feed clients)
        self.frames_shown += 1
        for sink in self.sinks:
            sink(rgba)

    def load_image(self, data: bytes) -> str:
        """Switch to the trained student of this image if there is one; else keep the model. A PNG
        that cannot be a character (no alpha, another size) keeps it too, with the reason: extras
        answers OK there, and SillyTavern sends the character's templates only after an OK."""
        image = open_png(data, "uploaded image")  # a broken upload is refused (400)
        try:
            match = self.students.get(image_key(to_rgba_array(image, "uploaded image")))
            reason = "no trained student for this image"
        except ThaError as err:
            match, reason = None, str(err)
        if match is None:
            message = (f"{reason}; keeping {self.model_dir.name} "
                       f"(train one with `tha distill`, then pass it to `tha serve --students`)")
            log.warning(message)
            self.loop.resume()
            return message
        with self._swap:
            if match != self.model_dir:
                loop = self._loop(load_character_model(match))
                old, self.loop, self.model_dir = self.loop, loop, match
                loop.start()
                old.stop()
                self._finished_frames += old.model_frames
                old.backend.close()
            self.loop.resume()
        log.info("loaded %s", match)
        return f"OK: loaded {match.name}"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pose and emotion values: JSON's "0.5" and true are refused, not coerced, as in pose files.
PoseValues = dict[str, StrictFloat]


class LimitedJsonRequest(Request):
    """A request whose JSON body is parsed with the limits of tha.models.limits (nesting depth,
    digits per number, no NaN): plain json.loads recurses per level and takes any integer, and
    FastAPI reports either as a bare "error parsing the body"."""

    async def json(self) -> Any:
        body = await self.body()
        try:  # off the loop: the depth scan of a 1 MB body takes a fifth of a second
            return await asyncio.to_thread(parse_json, body, "body")
        except ThaError as err:
            raise HTTPException(400, str(err)) from None


class LimitedJsonRoute(APIRoute):
    """FastAPI's hook for a custom Request class: its body parsing then calls LimitedJsonRequest.json.
    Every route's body is capped at the JSON limit unless it names its own (the two that carry
    files): a route's limit, unlike the app's, is enforced inside the middleware, so CORS and
    NamedBodyLimit see the refusal."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, max_body_size: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(path, endpoint, max_body_size=max_body_size or MAX_JSON_BYTES, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            return await handler(LimitedJsonRequest(request.scope, request.receive))

        return limited


class NamedBodyLimit:
    """Starlette answers a body past its limit with a bare "Content Too Large" from inside its
    middleware (no handler sees it); this rewrites that answer to name the limit, as every
    other refusal names its problem and fix. ``limits`` maps a path to its limit in bytes."""

    def __init__(self, app: Callable, limits: Callable[[str], int]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        replacing = False

        async def send_named(message: dict) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and message["status"] == 413:
                replacing = True
                limit = self.limits(scope["path"])
                detail = f"the body is over this endpoint's limit of {limit / (1 << 20):g} MB ({limit:,} bytes)"
                body = json.dumps({"detail": f"{detail}; send a smaller one"}).encode()
                kept = [(k, v) for k, v in message["headers"] if k.lower() not in (b"content-type", b"content-length")]
                await send({**message, "headers": [*kept, (b"content-type", b"application/json"),
                                                   (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            elif not replacing:  # the original 413 body is dropped
                await send(message)

        await self.app(scope, receive, send_named)


class EmotionRequest(BaseModel):
    emotion_name: str = Field(description="the classifier's label, e.g. joy; unknown ones show neutral")


class ClassifyRequest(BaseModel):
    text: str = Field(description="chat text whose emotion to score")


def validation_message(err: RequestValidationError, content_type: str, shown: int = 3) -> str:
    """FastAPI's list of validation errors as one line: where each is, then what."""
    errors = err.errors()
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:shown]]
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    # FastAPI reads a body as JSON only when its Content-Type says so (curl -d sends a form
    # type); otherwise the object it expected is "not a valid dictionary", which hides why.
    wanted_object = any(e["type"] in ("dict_type", "model_attributes_type") and e["loc"] == ("body",) for e in errors)
    if wanted_object and not content_type.startswith("application/json"):
        more += (f"; the body came as {content_type or 'no Content-Type'}: send it with "
                 "Content-Type: application/json")
    return "; ".join(parts) + more


def create_app(state: LiveState) -> FastAPI:
    # Body limits are per route (LimitedJsonRoute): FastAPI refuses a larger Content-Length before
    # reading (413) and counts the bytes as they stream.
    app = FastAPI(title="tha serve", docs_url=None, redoc_url=None)
    app.router.route_class = LimitedJsonRoute
    app.add_middleware(CORSMiddleware, allow_origins=list(state.config.allow_origins),
                       allow_methods=["GET", "POST"], allow_headers=["*"])
    api = "/api/talkinghead"

    @app.get("/api/modules")
    async def modules() -> dict[str, list[str]]:
        """What SillyTavern asks first: it calls talkinghead (and classify) endpoints only when listed here."""
        return {"modules": ["talkinghead", *(["classify"] if state.classifier is not None else [])]}

    def classifier() -> EmotionClassifier:
        if state.classifier is None:
            raise HTTPException(403, "the classify module is off; start tha serve with --classify MODEL")
        return state.classifier

    @app.get("/api/classify/labels")
    async def classify_labels() -> dict[str, list[str]]:
        """The emotions the classifier knows: SillyTavern's expression list."""
        return {"labels": classifier().labels}

    @app.post("/api/classify")
    async def classify(body: ClassifyRequest) -> dict[str, list[dict[str, Any]]]:
        """Every label's score for the text, highest first; the character takes the top emotion,
        as extras' talkinghead follows its classifier."""
        scores = await asyncio.to_thread(classifier().scores, body.text)
        state.animator.set_emotion(scores[0].label)
        return {"classification": [{"label": s.label, "score": s.score} for s in scores]}

    @app.exception_handler(ThaError)
    async def _bad_input(request: Request, err: ThaError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(err, request.headers.get("content-type", ""))},
                            status_code=422)

    @app.post(f"{api}/load", response_class=PlainTextResponse, max_body_size=MAX_UPLOAD_BYTES,
              form_limits={"max_files": 1, "max_fields": 8})
    async def load(file: Annotated[UploadFile, File(description="the character's 512x512 RGBA PNG")]) -> str:
        data = await file.read()
        if not data.startswith(PNG_SIGNATURE):
            raise HTTPException(415, "the uploaded file is not a PNG; send a 512x512 RGBA PNG")
        return await asyncio.to_thread(state.load_image, data)

    @app.post(f"{api}/load_emotion_templates", response_class=PlainTextResponse)
    async def load_emotion_templates(
            templates: Annotated[dict[str, PoseValues], Body(default_factory=dict)]) -> str:
        """{emotion: {parameter: value}} laid over the presets; extras' `_index` names are accepted."""
        emotions = dict(state.emotion_defaults)
        emotions.update(parse_emotions(templates, "emotion templates"))
        state.animator.set_emotions(emotions)
        return "OK"

    @app.post(f"{api}/load_animator_settings", response_class=PlainTextResponse)
    async def load_animator_settings(settings: Annotated[dict[str, Any], Body(default_factory=dict)]) -> str:
        # {} resets to what the server started with; keys are laid over that, not over the last load.
        # Values stay untyped here: AnimatorSettings checks its own fields, and extras' keys we lack
        # (postprocessor_chain) are reported, not refused; a key neither has is refused.
        parsed, unknown = settings_from_dict(settings, base=state.config.animator)
        state.animator.set_settings(parsed)
        state.retime()
        if unknown:  # the settings loader has logged them once already
            return f"OK (ignored: {', '.join(unknown)})"
        return "OK"

    @app.get(f"{api}/unload", response_class=PlainTextResponse)
    async def unload() -> str:
        state.pause()
        return "OK"

    @app.get(f"{api}/start_talking", response_class=PlainTextResponse)
    async def start_talking() -> str:
        state.animator.start_talking()
        return "talking started"

    @app.get(f"{api}/stop_talking", response_class=PlainTextResponse)
    async def stop_talking() -> str:
        state.animator.stop_talking()
        return "talking stopped"

    @app.post(f"{api}/set_emotion", response_class=PlainTextResponse)
    async def set_emotion(body: EmotionRequest) -> str:
        return f"emotion set to {state.animator.set_emotion(body.emotion_name)}"

    @app.get(f"{api}/result_feed")
    async def result_feed(format: str = "png", level: int = 1, quality: int = 80):
        fmt = feed_format(format, level, quality)

        async def parts():
            due = time.monotonic()
            while not state.stopping.is_set():
                data = await asyncio.to_thread(state.frame.get, fmt)
                yield (f"--{BOUNDARY}\r\nContent-Type: {fmt.mime}\r\nContent-Length: {len(data)}\r\n\r\n"
                       .encode() + data + b"\r\n")
                # Paced by the clock, so the encoding time is part of the period, not added to it.
                due = max(due + 1.0 / state.animator.settings.target_fps, time.monotonic() - 1.0)
                await asyncio.sleep(max(0.0, due - time.monotonic()))

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    @app.post("/api/tha/speak", max_body_size=MAX_UPLOAD_BYTES)
    async def speak(request: Request,
                    audio: Annotated[bytes, Body(media_type="application/octet-stream",
                                                 description=f"speech as the raw body: {AUDIO_FORMATS}")]):
        """Lip-sync to the audio file sent as the body, starting now (play the audio alongside)."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):  # as /load takes its image
            raise HTTPException(415, "send the audio file as the raw request body, not as a form "
                                     "(curl --data-binary @speech.wav, not -F)")
        fps = state.animator.settings.target_fps
        # Off the event loop (status and the feed keep answering), bounded by the audio limits
        # read_wav checks from the header and while decoding.
        track = await asyncio.to_thread(lambda: analyse(*read_wav(audio), fps))
        state.animator.speak(track, time.monotonic())
        return {"frames": len(track), "seconds": round(track.duration, 3)}

    @app.get("/api/tha/status")
    async def status():
        return {"model": str(state.model_dir), "backend": state.backend.name, "emotion": state.animator.emotion,
                "talking": state.animator.talking, "animating": state.animating,
                "frames_rendered": state.frames_rendered, "frames_shown": state.frames_shown,
                "last_render_seconds": round(state.loop.render_seconds, 4),
                "students": sorted(str(p) for p in state.students.values()),
                "settings": settings_to_dict(state.animator.settings)}

    @app.get("/api/tha/pose")
    async def get_pose():
        """The pose of the newest rendered frame."""
        return pose_to_dict(state.last_pose)

    @app.post("/api/tha/pose")
    async def set_pose(values: Annotated[PoseValues, Body(default_factory=dict)]):
        """Pin parameters on top of the animation: {"head_x": 0.3}; {} releases them."""
        pose_from_dict(values, clamp=False)  # refuse unknown names and out-of-range values with a reason
        state.animator.set_overrides(values)
        return {"pinned": sorted(values)}

    limits = {route.path: route.max_body_size for route in app.routes if isinstance(route, APIRoute)}
    app.add_middleware(NamedBodyLimit, limits=lambda path: limits.get(path, MAX_JSON_BYTES))
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a taken port or an unknown host is one
    line at once, not a log entry after startup. Made as uvicorn makes its own."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ThaError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port or --host, "
                       "or stop the program using it") from None
    return sock


def _stopping_server(config, stopping: threading.Event):
    """uvicorn's server, telling the feed streams to end when a signal asks it to stop, so that
    they finish within the graceful period instead of being cancelled at its end."""
    import uvicorn

    class StoppingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            stopping.set()
            super().handle_exit(sig, frame)

    return StoppingServer(config)


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 5100, virtual_camera: bool = False) -> None:
    """Run until interrupted."""
    import uvicorn

    with closing(listening_socket(host, port)) as sock:
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
            # SillyTavern holds result_feed open while its tab is: without a limit, Ctrl+C or a
            # service stop waits on that stream for ever
            app_config = uvicorn.Config(create_app(state), log_level="info",
                                        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
            bound_host, bound_port = sock.getsockname()[:2]
            log.info("serving http://%s:%d/ (SillyTavern: set the Extras URL to it); Ctrl+C stops",
                     f"[{bound_host}]" if ":" in bound_host else bound_host, bound_port)
            _stopping_server(app_config, state.stopping).run(sockets=[sock])
        finally:
            state.close()
            if camera is not None:
                camera.close()
