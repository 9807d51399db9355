"""The viewer: a window (or headless context) that draws the newest rendered frame at display
rate, with the pose overlay on top. ``Viewer`` is the programmable object (tests drive it a
frame at a time); ``run_viewer`` is the loop behind `tha view`."""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

import tha.viewer  # noqa: F401  (selects PyOpenGL's EGL platform before OpenGL is imported)
from tha.models.errors import ThaError
from tha.models.pose import load_pose_file, neutral_pose, save_pose_file
from tha.runtime.backends.base import Backend
from tha.runtime.sources.base import PoseSource, SliderSource
from tha.runtime.render_loop import LoopOptions, RenderLoop

DEFAULT_SIZE = (828, 512)  # the panel's column, then a 512x512 character at 1:1

# GLFW key codes (ASCII for letters), so the table reads without importing glfw.
KEYS = {ord("H"): "toggle_overlay", ord("R"): "reset", ord("S"): "screenshot", ord("B"): "next_background",
        ord("C"): "calibrate", ord("Q"): "quit", 256: "quit"}
CTRL_KEYS = {ord("S"): "save_pose", ord("O"): "load_pose"}
_PRESS, _CTRL = 1, 0x2


class Viewer:
    """One open viewer. Use as a context manager; call ``step()`` once per displayed frame."""

    def __init__(self, backend: Backend, source: PoseSource, *, offscreen: bool = False, overlay: bool = True,
                 title: str = "tha", record: Path | None = None, fps: float = 30.0, interpolate: bool = True,
                 max_frames: int | None = None, on_recorded: Callable[[Path], None] | None = None):
        from tha.viewer.canvas import BACKGROUNDS, Canvas
        from tha.viewer.overlay import Overlay, Readout

        if offscreen:
            from tha.viewer.offscreen import Offscreen

            self.surface = Offscreen(DEFAULT_SIZE)
        else:
            from tha.viewer.window import Window

            self.surface = Window(DEFAULT_SIZE, title)
        try:
            self.canvas = Canvas()
            self.overlay = Overlay(None if offscreen else self.surface.handle)
        except BaseException:
            self.surface.close()
            raise
        self.overlay.visible = overlay
        self.overlay.backgrounds = [b.name for b in BACKGROUNDS]
        self.surface.on_key(self._key)
        self.backend, self.source = backend, source
        self.render_loop = RenderLoop(backend, source, LoopOptions(interpolate=interpolate, display_fps=fps))
        blended = " + blended frames" if self.render_loop.timeline is not None else ""
        self.readout = Readout(backend=backend.name + blended, source=source.name)
        self.record, self.fps, self.max_frames = record, fps, max_frames
        self.writer = None
        self.on_recorded = on_recorded  # called once the recording is in place, however the run ends
        self._record_start: float | None = None  # the clock when the first frame was recorded
        self.screenshot_dir = Path.cwd()  # where S saves; tests point it elsewhere
        self.last_screenshot: Path | None = None
        self.frames = 0  # frames drawn that show a rendered character
        self._shown = None  # the Rendered in the texture (its frame feeds recordings that keep alpha)
        self._pending: list[str] = []
        self._last_draw = time.perf_counter()

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Viewer":
        self.source.start()
        self.render_loop.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Each step runs whatever an earlier one raises (a source's close, a second Ctrl+C);
        # ExitStack runs them last-pushed first: loop, source, overlay, canvas, surface.
        with ExitStack() as stack:
            stack.callback(self.surface.close)
            stack.callback(self.canvas.close)
            stack.callback(self.overlay.close)
            stack.callback(self.source.close)
            stack.callback(self.render_loop.stop)
            # The recording first: only this (draw) thread writes it, so it need not wait for
            # the loop, and nothing later can leave it a hidden temp file.
            self._finish_recording()

    def _finish_recording(self) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        writer.close()
        # also on Ctrl+C or SIGTERM: the recording so far replaces the old file, on purpose,
        # and the user must hear that it did
        if self.on_recorded is not None:
            self.on_recorded(self.record)

    @property
    def should_close(self) -> bool:
        return self.surface.should_close

    # -- the programmable surface (tests, other tools) ---------------------------------------
    def set_pose(self, pose: np.ndarray) -> None:
        if not isinstance(self.source, SliderSource):
            raise ThaError(f"the '{self.source.name}' source drives the pose; only the sliders source takes set_pose")
        self.source.set_pose(pose)

    def wait_for_pose(self, pose: np.ndarray, timeout: float = 120.0) -> None:
        """Block until the backend has rendered exactly ``pose``."""
        if self.render_loop.wait_for(pose, timeout) is None:
            self._raise_render_error()
            raise ThaError(f"the {self.backend.name} backend did not render the pose within {timeout:g} s")

    def trigger(self, action: str) -> None:
        """Queue an overlay/keyboard action (reset, screenshot, save_pose, load_pose, calibrate,
        toggle_overlay, next_background, background:N, quit); it runs in the next ``step``."""
        self._pending.append(action)

    def set_background(self, index: int) -> None:
        from tha.viewer.canvas import BACKGROUNDS

        self.canvas.background = BACKGROUNDS[index % len(BACKGROUNDS)]
        self.overlay.background = index % len(BACKGROUNDS)

    def image_rect(self) -> tuple[int, int, int, int]:
        """Where the character is drawn in the framebuffer: (x, y, w, h) from the top-left."""
        from tha.viewer.canvas import fit_rect

        size = self.surface.framebuffer_size()
        return fit_rect(size, self.canvas.size, self._panel_column(size))

    @staticmethod
    def _panel_column(size: tuple[int, int]) -> int:
        """The left columns the panel covers, kept clear when the window is wide enough for a
        full-height character beside them (whether or not the panel is shown: H must not make
        the character jump)."""
        from tha.viewer.overlay import PANEL_COLUMN

        return PANEL_COLUMN if size[0] - PANEL_COLUMN >= size[1] else 0

    # -- one frame ---------------------------------------------------------------------------
    def step(self, read: bool = False) -> np.ndarray | None:
        """Poll input, upload the newest frame, draw it, the overlay, present. With ``read``,
        returns the framebuffer as drawn (overlay included), read with glReadPixels."""
        from OpenGL import GL
        from OpenGL.error import Error as GLError

        self.surface.poll()
        self._raise_render_error()
        try:
            start = time.perf_counter()
            self._upload()
            self.surface.bind()
            size = self.surface.framebuffer_size()
            self.canvas.draw(size, self._panel_column(size))
            draw_ms = (time.perf_counter() - start) * 1000.0
            for action in self._take_actions():
                self._run(action)
            if self._shown is not None:
                self.frames += 1
                if self.record is not None:
                    self._write_video_frame()
            self.surface.bind()
            self._overlay(draw_ms)
            pixels = None
            if read:
                GL.glReadBuffer(GL.GL_BACK if not self.surface.offscreen else GL.GL_COLOR_ATTACHMENT0)
                from tha.viewer.canvas import read_pixels

                pixels = read_pixels(*size)
            self.surface.present()
        except GLError as err:
            raise ThaError(f"lost the OpenGL context ({type(err).__name__}: {getattr(err, 'description', err)}); "
                           "restart the viewer") from None
        return pixels

    def _upload(self) -> None:
        latest = self.render_loop.latest()
        if latest is None or (self._shown is not None and latest.serial == self._shown.serial):
            return
        if latest.frame.on_device:
            self.canvas.upload_device(latest.frame.rgba)
        else:
            self.canvas.upload(latest.frame.host())
        self._shown = latest
        self.readout.backend_ms = latest.ms

    def _overlay(self, draw_ms: float) -> None:
        now = time.perf_counter()
        self.readout.fps = 0.9 * self.readout.fps + 0.1 / max(now - self._last_draw, 1e-6)
        self._last_draw = now
        self.readout.draw_ms = draw_ms
        self.readout.source = f"{self.source.name} ({self.source.status})"
        edit = self.overlay.draw(self.source.read(time.monotonic()), self.readout, self.surface.framebuffer_size())
        if edit.pose is not None:
            self._edit_pose(edit.pose)
        self._pending.extend(edit.actions)

    def _take_actions(self) -> list[str]:
        actions, self._pending = self._pending, []
        return actions

    def _raise_render_error(self) -> None:
        err = self.render_loop.error
        if err is None:
            return
        if isinstance(err, ThaError):
            raise err
        raise ThaError(f"the {self.backend.name} backend failed: {type(err).__name__}: {err}")

    # -- actions -----------------------------------------------------------------------------
    def _key(self, key: int, action: int, mods: int) -> None:
        if action != _PRESS or self.overlay.wants_keyboard:
            return
        name = (CTRL_KEYS if mods & _CTRL else KEYS).get(key)
        if name:
            self.trigger(name)

    def _edit_pose(self, pose: np.ndarray) -> None:
        if isinstance(self.source, SliderSource):
            self.source.set_pose(pose)
        else:
            self.readout.message = f"the {self.source.name} source drives the pose; the sliders only show it"

    def _run(self, action: str) -> None:
        try:
            self._dispatch(action)
        except ThaError as err:  # a bad pose file should not close the window
            self.readout.message = str(err)

    def _dispatch(self, action: str) -> None:
        if action == "quit":
            self.surface.request_close()
        elif action == "toggle_overlay":
            self.overlay.visible = not self.overlay.visible
        elif action == "reset":
            self._edit_pose(neutral_pose())
        elif action == "next_background":
            self.set_background(self.overlay.background + 1)
        elif action.startswith("background:"):
            self.set_background(int(action.split(":", 1)[1]))
        elif action == "screenshot":
            self.last_screenshot = self.screenshot()
            self.readout.message = f"wrote {self.last_screenshot}"
        elif action == "calibrate":
            calibrate = getattr(self.source, "calibrate", None)
            if calibrate is None:
                raise ThaError(f"the {self.source.name} source has no rest face to calibrate")
            calibrate()
            self.readout.message = "calibrating: hold a neutral face"
        elif action == "save_pose":
            save_pose_file(self.overlay.pose_path, self.source.read(time.monotonic()))
            self.readout.message = f"wrote {self.overlay.pose_path}"
        elif action == "load_pose":
            self._edit_pose(load_pose_file(self.overlay.pose_path))
            self.readout.message = f"loaded {self.overlay.pose_path}"
        else:
            raise ThaError(f"unknown viewer action '{action}'")

    def screenshot(self, path: Path | None = None) -> Path:
        """The character over the background (no overlay) at the frame's size, as a PNG."""
        from tha.models.image import save_png

        if path is None:
            path = self.screenshot_dir / time.strftime("tha-%Y%m%d-%H%M%S.png")
            n = 1
            while path.exists():
                path = path.with_name(f"{path.stem.split('~')[0]}~{n}.png")
                n += 1
        save_png(path, self.canvas.composite())
        return path

    @property
    def done(self) -> bool:
        """The window was closed, or ``max_frames`` frames were shown (recorded, when recording)."""
        count = self.frames if self.writer is None else self.writer.frames
        return self.should_close or (self.max_frames is not None and count >= self.max_frames)

    def _write_video_frame(self) -> None:
        """The video keeps the session's pace: a step slower than 1/fps repeats the frame, as a
        screen recorder does, so motion driven by the clock (the animator, a face) and sound
        recorded beside it are not sped up."""
        from tha.runtime.video import VideoWriter, keeps_alpha

        now = time.perf_counter()
        if self._record_start is None:
            self._record_start = now
        due = int((now - self._record_start) * self.fps) + 1
        if self.max_frames is not None:
            due = min(due, self.max_frames)
        written = 0 if self.writer is None else self.writer.frames
        if due <= written:
            return  # ahead of the clock: nothing to read back
        # a format with alpha gets the character alone; others what the viewer shows (its background)
        pixels = self._shown.frame.host() if keeps_alpha(self.record) else self.canvas.composite()
        if self.writer is None:
            self.writer = VideoWriter(self.record, self.fps, (pixels.shape[1], pixels.shape[0]))
        for _ in range(due - written):
            self.writer.write(pixels)


def run_viewer(backend: Backend, source: PoseSource, *, offscreen: bool = False, max_frames: int | None = None,
               record: Path | None = None, fps: float = 30.0, overlay: bool = True, title: str = "tha",
               interpolate: bool = True, on_recorded: Callable[[Path], None] | None = None) -> None:
    """Show ``backend``'s frames for ``source``'s poses until the window closes or
    ``max_frames`` frames showing the character were drawn. Headless or recording runs are
    paced at ``fps``; a window follows the display (capped at 120 Hz where vsync is absent)."""
    period = 1.0 / fps if (offscreen or record is not None) else 1.0 / 120.0
    with Viewer(backend, source, offscreen=offscreen, overlay=overlay, title=title, record=record, fps=fps,
                interpolate=interpolate, max_frames=max_frames, on_recorded=on_recorded) as viewer:
        next_time = time.perf_counter()
        while not viewer.done:
            viewer.step()
            next_time += period
            delay = next_time - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_time = time.perf_counter()
