"""The viewer on real GL (Mesa llvmpipe): a real X window under Xvfb and a headless EGL
context, read back with glReadPixels and compared with `tha pose`'s PNG of the same pose."""
from __future__ import annotations

import os
import signal
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tha.viewer  # noqa: F401  (PyOpenGL's EGL platform, before anything imports OpenGL)
from tha.models.errors import ThaError
from tha.models.image import load_rgba
from tha.models.pose import neutral_pose, pose_from_dict
from tha.runtime.backends.base import Backend, Frame
from tha.runtime.sources.base import SliderSource
from frames import psnr

POSE = {"head_x": 0.35, "neck_z": -0.2, "eye_wink_left": 0.8, "mouth_aaa": 0.6, "body_z": 0.25, "breathing": 0.5}
GREEN = 1  # index of the green screen in tha.viewer.canvas.BACKGROUNDS
GREEN_RGB = (0, 255, 0)


class MemoBackend(Backend):
    """The real torch backend, each distinct pose rendered once per test session (a 512x512
    frame costs seconds on this CPU); records the order of the poses it was asked for."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name
        self.cache: dict[bytes, Frame] = {}
        self.asked: list[np.ndarray] = []
        self.started = threading.Event()

    def render(self, pose: np.ndarray) -> Frame:
        self.asked.append(np.array(pose))
        self.started.set()
        key = np.asarray(pose, np.float32).tobytes()
        if key not in self.cache:
            self.cache[key] = self.inner.render(pose)
        return self.cache[key]


@pytest.fixture(scope="session")
def backend(lambda00):
    from tha.runtime.backends.torch import TorchBackend

    return MemoBackend(TorchBackend(lambda00))


@pytest.fixture(scope="session")
def pose() -> np.ndarray:
    return pose_from_dict(POSE)


@pytest.fixture(scope="session")
def reference(lambda00_dir, tmp_path_factory) -> np.ndarray:
    """`tha pose`'s PNG for POSE (run in-process through the real command)."""
    from typer.testing import CliRunner

    from tha.runtime.main import app

    out = tmp_path_factory.mktemp("pose") / "posed.png"
    args = ["pose", str(lambda00_dir), "-o", str(out)] + [a for k, v in POSE.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return load_rgba(out)


@pytest.fixture(scope="session")
def xvfb():
    """A private X server for the session; DISPLAY points at it while the tests run."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed (apt-get install xvfb); the window tests need an X server")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.kill()
        pytest.fail("Xvfb did not start")
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    yield os.environ["DISPLAY"]
    if previous is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = previous
    server.terminate()
    server.wait(timeout=10)


def composite(rgba: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    return np.round(rgba[..., :3] * alpha + np.asarray(rgb, np.float64) * (1.0 - alpha)).astype(np.uint8)


def checkerboard(height: int, width: int) -> np.ndarray:
    """The viewer's transparent background: 16 px cells counted from the lower-left corner."""
    rows = (height - 1 - np.arange(height))[:, None] // 16
    cols = np.arange(width)[None, :] // 16
    grey = np.where((rows + cols) % 2 == 0, 204, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def psnr_on_character(drawn_rgb: np.ndarray, reference_rgba: np.ndarray, background_rgb: np.ndarray) -> float:
    expected = composite(reference_rgba, (0, 0, 0)).astype(np.float64)
    alpha = reference_rgba[..., 3:4].astype(np.float64) / 255.0
    expected = np.round(expected + background_rgb.astype(np.float64) * (1.0 - alpha))
    mask = reference_rgba[..., 3] > 0
    assert mask.mean() > 0.1, "the reference should show the character"
    return psnr(drawn_rgb[mask], expected[mask])


def crop(pixels: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = rect
    return pixels[y:y + h, x:x + w]


def check_viewer(viewer, pose, reference, tmp_path: Path) -> None:
    """The shared checks for the window and the headless context."""
    viewer.set_background(GREEN)
    viewer.wait_for_pose(pose)
    with_overlay = viewer.step(read=True)
    viewer.trigger("toggle_overlay")
    viewer.step()
    bare = viewer.step(read=True)
    rect = viewer.image_rect()
    # 828x512: the panel's 316-column first, then the character 1:1 (it was centred under the panel)
    assert rect == (316, 0, 512, 512)

    # The character matches `tha pose`'s PNG composited on the same green.
    green = np.broadcast_to(np.asarray(GREEN_RGB, np.uint8), (512, 512, 3))
    assert psnr_on_character(crop(bare, rect)[..., :3], reference, green) >= 40.0
    # Outside the character the green screen shows; beside the image, the clear colour.
    transparent = reference[..., 3] == 0
    assert (crop(bare, rect)[..., :3][transparent] == GREEN_RGB).all()

    # The overlay panel (top-left) changes its pixels; elsewhere the frames agree.
    panel = (with_overlay[8:400, 8:300] != bare[8:400, 8:300]).any(axis=2)
    assert panel.mean() > 0.5
    assert (with_overlay[:, 316:] == bare[:, 316:]).all()  # the panel leaves the character alone

    # The screenshot action writes the picture without the panel: it equals the readback.
    viewer.screenshot_dir = tmp_path
    viewer.trigger("screenshot")
    viewer.step()
    shot = np.asarray(Image.open(viewer.last_screenshot))
    assert viewer.last_screenshot.parent == tmp_path
    assert (shot == crop(bare, rect)).all()


def test_window_matches_tha_pose(xvfb, backend, pose, reference, tmp_path):
    from tha.viewer.app import Viewer

    with Viewer(backend, SliderSource(pose), title="tha test") as viewer:
        assert not viewer.surface.offscreen
        check_viewer(viewer, pose, reference, tmp_path)


def test_offscreen_matches_tha_pose_without_x(backend, pose, reference, tmp_path, monkeypatch):
    from tha.viewer.app import Viewer

    monkeypatch.delenv("DISPLAY", raising=False)
    with Viewer(backend, SliderSource(pose), offscreen=True) as viewer:
        assert viewer.surface.offscreen
        check_viewer(viewer, pose, reference, tmp_path)


def test_triton_loads_after_a_gl_context():
    """Triton imported after a Mesa GL context exists crashed the process (its LLVM and
    llvmpipe's); tha.viewer loads it first. A subprocess, since the failure is a segfault."""
    pytest.importorskip("triton")
    script = ("import tha.viewer\nfrom tha.viewer.offscreen import Offscreen\nOffscreen((64, 64))\n"
              "import triton\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


def test_pose_actions_reset_save_load(backend, pose, tmp_path, monkeypatch):
    from tha.viewer.app import Viewer

    monkeypatch.delenv("DISPLAY", raising=False)
    source = SliderSource(pose)
    with Viewer(backend, source, offscreen=True) as viewer:
        viewer.overlay.pose_path = str(tmp_path / "pose.json")
        viewer.trigger("save_pose")
        viewer.trigger("reset")
        viewer.step()
        assert np.array_equal(source.read(), neutral_pose())
        viewer.trigger("load_pose")
        viewer.step()
        np.testing.assert_allclose(source.read(), pose, atol=1e-6)
        # A bad pose file is reported in the panel; the viewer keeps running.
        (tmp_path / "pose.json").write_text("{not json")
        viewer.trigger("load_pose")
        viewer.step()
        assert "not valid JSON" in viewer.readout.message
        np.testing.assert_allclose(source.read(), pose, atol=1e-6)
        # A wrong-sized or NaN pose from code was a raw numpy ValueError; it is one line, the pose kept.
        for bad, needle in ((np.zeros(44), "a pose has 45 values, got 44"),
                            (np.full(45, np.nan), "pose parameter 'eyebrow_troubled_left' is nan")):
            with pytest.raises(ThaError, match=needle) as caught:
                viewer.set_pose(bad)
            assert "\n" not in str(caught.value)
        np.testing.assert_allclose(source.read(), pose, atol=1e-6)
        given = neutral_pose()
        viewer.set_pose(given)
        given[0] = 1.0  # the caller's array is its own again
        assert np.array_equal(source.read(), neutral_pose())


def test_newest_pose_wins(backend, pose, monkeypatch):
    """While the backend renders, two poses arrive: only the newest is rendered next."""
    from tha.runtime.render_loop import RenderLoop

    source = SliderSource(neutral_pose())
    backend.asked.clear()
    backend.started.clear()
    loop = RenderLoop(backend, source)
    loop.start()
    try:
        assert backend.started.wait(60)
        skipped = pose_from_dict({"head_y": 0.5})
        source.set_pose(skipped)
        source.set_pose(pose)
        assert loop.wait_for(pose, timeout=120) is not None
    finally:
        loop.stop()
    asked = [p.tobytes() for p in backend.asked]
    assert asked[0] == neutral_pose().tobytes()
    assert pose.tobytes() in asked and skipped.tobytes() not in asked


def test_animator_is_posed_ahead_and_shown_between_model_frames(lambda00):
    """With the animator and fastcpu the loop renders model frames ahead of the clock and
    publishes blended frames at the display rate: more frames shown than rendered, each close
    to a true render of the pose it shows."""
    from tha.export.verify import psnr
    from tha.runtime.backends.fastcpu import FastCPUBackend
    from tha.runtime.sources.animator import Animator
    from tha.runtime.render_loop import LoopOptions, RenderLoop

    animator = Animator()
    animator.set_emotion("joy")
    loop = RenderLoop(FastCPUBackend(lambda00), animator, LoopOptions(display_fps=20.0))
    assert loop.timeline is not None
    seen: dict[int, object] = {}
    loop.start()
    try:
        deadline = time.monotonic() + 120
        while loop.model_frames < 4 and time.monotonic() < deadline and loop.error is None:
            latest = loop.latest()
            if latest is not None:
                seen[latest.serial] = latest
            time.sleep(0.02)
    finally:
        loop.stop()
    assert loop.error is None and loop.model_frames >= 4
    assert len(seen) > loop.model_frames, (len(seen), loop.model_frames)
    shown = seen[max(seen)]
    truth = FastCPUBackend(lambda00).render(shown.pose).host()
    assert psnr(shown.frame.host(), truth, 255.0) >= 35.0
    assert RenderLoop(FastCPUBackend(lambda00), animator, LoopOptions(interpolate=False)).timeline is None
    assert RenderLoop(FastCPUBackend(lambda00), SliderSource()).timeline is None  # not predictable


def test_run_viewer_records_frames_offscreen(backend, pose, reference, tmp_path, monkeypatch):
    """run_viewer (the API behind `tha view`) headless: max_frames frames, never the panel. A
    PNG folder (as .webm and .mov) keeps the character's transparency (the checkerboard was
    baked in); an .mp4 shows it over the viewer's background."""
    import av

    from tha.viewer.app import run_viewer

    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "frames"
    run_viewer(backend, SliderSource(pose), offscreen=True, max_frames=3, record=out, fps=60.0)
    frames = sorted(out.glob("*.png"))
    assert len(frames) == 3
    first = load_rgba(frames[0])
    assert np.array_equal(first[..., 3] == 0, reference[..., 3] == 0)  # transparent where the character is not
    assert psnr_on_character(composite(first, GREEN_RGB), reference, np.full((512, 512, 3), GREEN_RGB, np.uint8)) >= 40.0
    video = tmp_path / "shown.mp4"
    run_viewer(backend, SliderSource(pose), offscreen=True, max_frames=2, record=video, fps=60.0)
    with av.open(str(video)) as container:
        shown = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert psnr_on_character(shown, reference, checkerboard(512, 512)) >= 30.0  # yuv420: a lossy codec


def test_a_recording_keeps_the_sessions_pace(backend, pose, tmp_path, monkeypatch):
    """Each step wrote one frame of 1/fps: on a CPU where a step takes longer, a 35 s session
    became a 10 s video playing 3.5x too fast. A slow step now repeats its frame."""
    from tha.viewer.app import Viewer

    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "frames"
    with Viewer(backend, SliderSource(pose), offscreen=True, record=out, fps=30.0) as viewer:
        began = time.perf_counter()
        while viewer.writer is None:  # steps until the first rendered frame is shown and recorded
            assert time.perf_counter() - began < 120, "no frame was rendered"
            first_step = time.perf_counter()
            viewer.step()
        time.sleep(0.5)
        viewer.step()
        ended = time.perf_counter()
        written = viewer.writer.frames
    assert int(0.5 * 30) + 1 <= written <= int((ended - first_step) * 30) + 1
    assert len(list(out.glob("frame_*.png"))) == written


def test_a_source_that_fails_to_close_still_leaves_the_recording(backend, pose, tmp_path, monkeypatch):
    """The recording was finished after the render loop and the source were closed: a source
    whose close() raised (or a second Ctrl+C there) left it a hidden temp file, and the
    window open. It is finished first, and every later step runs whatever raises."""
    from tha.viewer.app import Viewer

    class Unplugged(SliderSource):
        def close(self) -> None:
            raise OSError("camera gone")

    monkeypatch.delenv("DISPLAY", raising=False)
    out, recorded = tmp_path / "session.mp4", []
    viewer = Viewer(backend, Unplugged(pose), offscreen=True, record=out, on_recorded=recorded.append)
    closed = []
    for part in (viewer.overlay, viewer.canvas, viewer.surface):
        close = part.close
        monkeypatch.setattr(part, "close", lambda close=close, part=part: (closed.append(part), close()))
    with pytest.raises(OSError, match="camera gone"), viewer:
        began = time.perf_counter()
        while viewer.writer is None:  # steps until the first rendered frame is shown and recorded
            assert time.perf_counter() - began < 120, "no frame was rendered"
            viewer.step()
    assert recorded == [out] and out.is_file() and [p.name for p in tmp_path.iterdir()] == ["session.mp4"]
    assert closed == [viewer.overlay, viewer.canvas, viewer.surface]


def test_missing_display_is_one_clear_line(backend, monkeypatch):
    from tha.viewer.app import Viewer

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ThaError, match="no display.*--offscreen"):
        Viewer(backend, SliderSource())


def test_closing_the_window_ends_run_viewer(xvfb, backend, pose, monkeypatch):
    """The window manager's close (GLFW's should-close flag) ends the loop cleanly."""
    import glfw

    from tha.viewer.app import Viewer, run_viewer

    opened = []
    enter = Viewer.__enter__
    monkeypatch.setattr(Viewer, "__enter__", lambda viewer: opened.append(viewer) or enter(viewer))

    def close_soon():
        deadline = time.monotonic() + 120  # bounded: a viewer that never opens must not hang the suite
        while not opened and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        threading.Event().wait(0.5)
        if opened:
            glfw.set_window_should_close(opened[0].surface.handle, True)

    closer = threading.Thread(target=close_soon, daemon=True)
    closer.start()
    run_viewer(backend, SliderSource(pose), max_frames=None)
    closer.join(timeout=60)
    assert opened[0].surface.handle is None  # the window was destroyed on the way out


@pytest.mark.slow
def test_cli_view_offscreen_and_missing_display(lambda00_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    tha = [str(Path(sys.executable).with_name("tha"))]
    out = tmp_path / "rec"
    done = subprocess.run([*tha, "view", str(lambda00_dir), "--offscreen", "--frames", "2", "--record", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("*.png"))) == 2
    failed = subprocess.run([*tha, "view", str(lambda00_dir), "--frames", "1"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "error: no display: DISPLAY is not set; run under X (or Xvfb), or use --offscreen"]


def test_bench_reports_pbo_upload_draw(lambda00_dir, monkeypatch):
    from tha.viewer.bench import measure_viewer

    monkeypatch.delenv("DISPLAY", raising=False)
    rows = measure_viewer(lambda00_dir, frames=10)
    names = [name for name, _ in rows]
    assert names[0] == "viewer PBO upload+draw 512x512 (ms/frame)"
    assert all(np.isfinite(ms) and ms > 0 for _, ms in rows)


@pytest.mark.gpu
def test_cuda_frames_reach_gl_through_interop(lambda00, monkeypatch):
    """A CUDA frame (the cuda backend's, from its graph's static buffer) goes into the texture via
    cuda-python interop and draws exactly like the same frame uploaded from the host."""
    import torch

    from tha.runtime.backends.cuda import CudaBackend
    from tha.viewer.canvas import Canvas
    from tha.viewer.offscreen import Offscreen

    monkeypatch.delenv("DISPLAY", raising=False)
    frame = CudaBackend(lambda00, precision="fp16").render(pose_from_dict(POSE))
    assert frame.on_device
    surface = Offscreen((512, 512))
    canvas = Canvas()
    try:
        canvas.upload_device(frame.rgba)
        through_interop = canvas.composite()
        assert canvas.interop is not None
        canvas.upload(frame.host())
        through_host = canvas.composite()
    finally:
        canvas.close()
        surface.close()
    assert (through_interop == through_host).all()
    assert (through_interop[..., :3] != through_interop[0, 0, :3]).any()  # not a blank frame
    torch.cuda.synchronize()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_recording_says_it_replaced_the_old_file(tmp_path, stop):
    """Ctrl+C or SIGTERM keeps the recording so far (on purpose) and it replaces the old file:
    it did so without the `wrote rec.mp4` a finished run prints."""
    from cli import THA

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    out = tmp_path / "rec.mp4"
    out.write_bytes(b"the old recording")

    def default_signals() -> None:  # a background job's child starts with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen([*THA, "view", str(demo), "--offscreen", "--source", "animator", "--backend", "fastcpu",
                                "--record", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".rec.mp4.*.tmp")):  # made at the first recorded frame
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.05)
        time.sleep(1.0)  # past the writer's opening, into the recording
    finally:
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + stop and "Traceback" not in stderr, stderr
    assert stdout.splitlines() == [f"wrote {out}"]
    assert out.read_bytes() != b"the old recording"
