"""What `tha serve` serves: the model, the animator driving it, and the newest frame.

The live render loop (``tha.runtime.render_loop``, the viewer's too) turns the animator's
poses into frames, capped at the target FPS, posing ahead and blending between model frames
where the backend allows (fastcpu); the newest frame is kept, and every ``result_feed`` client
is sent it at the target FPS, so a slow renderer re-sends its last frame instead of stalling
the stream. An uploaded character image switches to its trained student, if one is served.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from tha.models.character import MODEL_FILE, load_character_model, model_paths
from tha.models.errors import ThaError
from tha.models.image import load_rgba, open_png, to_rgba_array
from tha.runtime.classify import EmotionClassifier
from tha.runtime.emotions import load_emotions
from tha.runtime.feed import EncodedFrame
from tha.runtime.render_loop import LoopOptions, Rendered, RenderLoop
from tha.runtime.renderer import open_backend
from tha.runtime.sources.animator import Animator, AnimatorSettings
from tha.runtime.sources.base import PoseSource

if TYPE_CHECKING:  # annotations only: the analysis (av) loads where audio is read
    from tha.runtime.lipsync import MouthTrack

log = logging.getLogger("tha.serve")


@dataclass(kw_only=True)
class ServeConfig:
    model_dir: Path
    backend: str = "auto"
    device: str = "cpu"
    students: tuple[Path, ...] = ()  # more model dirs (or folders of them) that /load may switch to
    animator: AnimatorSettings = field(default_factory=AnimatorSettings)
    emotions_file: Path | None = None
    microphone: bool = False  # live lip sync from the default audio input
    interpolate: bool = True  # model frames rendered ahead, display-rate frames between (fastcpu)
    precision: str | None = None  # fp16 / fp32, as --precision takes it (runtime/options.py); None: the default
    # Web pages that may call the API: SillyTavern runs in the browser on another origin (its own
    # port), so without CORS it cannot read a reply or send a JSON body. Extras allows every origin.
    allow_origins: tuple[str, ...] = ("*",)
    # A text-classification model (hub name or folder) for extras' `classify` module: chat text ->
    # emotion (tha.runtime.classify); None: the module is not offered.
    classify_model: str | None = None


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

    def speak(self, track: MouthTrack) -> None:
        """Lip-sync ``track`` from now, on time: the frames already posed ahead, with the old
        mouth, are dropped."""
        now = time.monotonic()
        self.animator.speak(track, now)
        self.loop.source_changed(now)  # after speak(): a pose read in between has the track

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
