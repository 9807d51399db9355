"""`tha serve`: the SillyTavern-extras talkinghead API over a THA4 student, so SillyTavern's
expressions extension works unchanged, plus a few JSON endpoints of our own.

What is served lives in ``tha.runtime.live_state`` (the model, the animator, the newest frame),
the feed's encoding in ``tha.runtime.feed``, and how requests are checked and refused in
``tha.runtime.request_checks``; here are the routes and the running server.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from contextlib import closing
from typing import Annotated, Any

from fastapi import Body, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, StrictFloat

from tha.models.errors import ThaError
from tha.models.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES
from tha.models.net import bound_socket, host_port, listen_error
from tha.models.pose import pose_from_dict, pose_to_dict
from tha.runtime.classify import EmotionClassifier
from tha.runtime.emotions import parse_emotions
from tha.runtime.feed import BOUNDARY, feed_format
from tha.runtime.lipsync import AUDIO_FORMATS, analyse, read_wav
from tha.runtime.live_state import LiveState, ServeConfig
from tha.runtime.request_checks import LimitedJsonRoute, NamedBodyLimit, validation_message
from tha.runtime.sources.animator import settings_from_dict, settings_to_dict

log = logging.getLogger("tha.serve")

GRACEFUL_SHUTDOWN_S = 2.0  # seconds open streams get to finish when the server stops
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pose and emotion values: JSON's "0.5" and true are refused, not coerced, as in pose files.
PoseValues = dict[str, StrictFloat]


class EmotionRequest(BaseModel):
    emotion_name: str = Field(description="the classifier's label, e.g. joy; unknown ones show neutral")


class ClassifyRequest(BaseModel):
    text: str = Field(description="chat text whose emotion to score")


def create_app(state: LiveState) -> FastAPI:
    # Body limits are per route (LimitedJsonRoute): FastAPI refuses a larger Content-Length before
    # reading (413) and counts the bytes as they stream.
    app = FastAPI(title="tha serve", docs_url=None, redoc_url=None)
    app.router.route_class = LimitedJsonRoute
    app.add_middleware(CORSMiddleware, allow_origins=list(state.config.allow_origins),
                       allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_exception_handler(ThaError, _bad_input)
    app.add_exception_handler(RequestValidationError, _malformed)
    _add_classify_routes(app, state)
    _add_talkinghead_routes(app, state)
    _add_feed_route(app, state)
    _add_tha_routes(app, state)
    limits = {route.path: route.max_body_size for route in app.routes if isinstance(route, APIRoute)}
    app.add_middleware(NamedBodyLimit, limits=lambda path: limits.get(path, MAX_JSON_BYTES))
    return app


async def _bad_input(request: Request, err: ThaError) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_code=400)


async def _malformed(request: Request, err: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": validation_message(err, request.headers.get("content-type", ""))},
                        status_code=422)


def _add_classify_routes(app: FastAPI, state: LiveState) -> None:
    """Extras' module list, and its classify module when --classify gives a model."""

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


def _add_talkinghead_routes(app: FastAPI, state: LiveState) -> None:
    """Extras' talkinghead module, as SillyTavern's expressions extension calls it."""
    api = "/api/talkinghead"

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


def _add_feed_route(app: FastAPI, state: LiveState) -> None:
    """Talkinghead's result_feed: the newest frame at the target FPS, as a multipart stream that
    SillyTavern shows in an <img>; it ends when the server begins to stop."""

    @app.get("/api/talkinghead/result_feed")
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


def _add_tha_routes(app: FastAPI, state: LiveState) -> None:
    """Our own endpoints: lip sync to sent audio, status, and pinning the pose."""

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
        state.speak(track)
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


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a taken port or an unknown host is one
    line at once, not a log entry after startup."""
    try:
        return bound_socket(host, port, socket.SOCK_STREAM)
    except OSError as err:
        raise listen_error(err, host, port) from None


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
            log.info("serving http://%s/ (SillyTavern: set the Extras URL to it); Ctrl+C stops",
                     host_port(*sock.getsockname()[:2]))
            _stopping_server(app_config, state.stopping).run(sockets=[sock])
        finally:
            state.close()
            if camera is not None:
                camera.close()
