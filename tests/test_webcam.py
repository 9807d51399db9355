"""Webcam/video puppeteering on a real face: skimage's astronaut photo, rotated, as a video."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tha.models.errors import ThaError
from tha.models.pose import index_of, neutral_pose

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"

# A head rolling from -15 to +15 degrees in 3-degree steps (skimage rotates counter-clockwise
# for positive angles); the checks read the -15, 0 and +15 frames.
SWEEP = tuple(float(a) for a in range(-15, 16, 3))
ANGLES = (-15.0, 0.0, 15.0)
CHECKED = tuple(SWEEP.index(a) for a in ANGLES)


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])


@pytest.fixture(scope="module")
def astronaut_video(tmp_path_factory):
    from skimage import data, transform

    from tha.runtime.video import VideoWriter

    photo = data.astronaut()
    covered = photo.copy()
    covered[20:260, 120:320] = 128  # a grey card over the whole face
    path = tmp_path_factory.mktemp("webcam") / "astronaut.mp4"
    with VideoWriter(path, fps=10) as writer:
        for angle in SWEEP:
            writer.write(_rgba((transform.rotate(photo, angle, mode="edge") * 255).round().astype(np.uint8)))
        writer.write(_rgba(covered))
    return path


@pytest.fixture(scope="module")
def tracked(astronaut_video):
    """(head angles, status) for every frame of the video, through CaptureSource."""
    from tha.runtime.sources.webcam import CaptureSource

    source = CaptureSource(path=astronaut_video, realtime=False)
    results = []
    with source:
        while source.step():
            face = source.last_face if source.status == "ok" else None
            results.append((None if face is None else face.head, source.status, source.read(0.0)))
            source.last_face = None
        assert source.status == "video ended"
        assert source.frames == len(SWEEP) + 1 and source.track_ms > 0
    return results


def test_head_roll_follows_the_rotation(tracked):
    rolls = []
    for angle, (head, status, _) in zip(ANGLES, [tracked[i] for i in CHECKED]):
        assert status == "ok" and head is not None, f"no face found at {angle} degrees"
        pitch, yaw, roll = head
        assert roll == pytest.approx(angle, abs=5.0)
        assert abs(yaw) < 10 and abs(pitch) < 10  # an in-plane rotation is not a turn or a nod
        rolls.append(roll)
    assert rolls[0] < rolls[1] < rolls[2]
    assert rolls[2] - rolls[0] == pytest.approx(30.0, abs=4.0)


def test_covered_face_reports_no_face(tracked):
    head, status, pose = tracked[-1]
    assert head is None and status == "no face"
    # The last seen face's pose is held (eased to neutral only after stale_after seconds).
    np.testing.assert_array_equal(pose, tracked[-2][2])


def test_roll_drives_neck_z_after_calibrating_on_the_upright_frame(astronaut_video):
    from tha.runtime.sources.arkit import ArkitConverter
    from tha.runtime.sources.webcam import FaceMeshTracker
    from tha.runtime.video import read_video

    frames, _ = read_video(astronaut_video)
    tracker = FaceMeshTracker(static_images=True)
    faces = [tracker.track(np.ascontiguousarray(frames[i][..., :3]), 0) for i in CHECKED]
    tracker.close()
    converter = ArkitConverter()
    converter.calibrate(faces[1])
    neck = [converter.raw_pose(face)[index_of("neck_z")] for face in faces]
    assert neck[0] < -0.8 and neck[2] > 0.8  # +-15 degrees is the full neck range
    assert neck[1] == pytest.approx(0.0, abs=1e-6)
    upright = converter.raw_pose(faces[1])
    np.testing.assert_allclose(upright, neutral_pose(), atol=1e-6)  # the rest face is the neutral pose
    for side in ("Left", "Right"):  # eyes open in the photo
        assert faces[1][f"eyeBlink{side}"] < 0.2


def test_a_failure_on_the_capture_thread_is_a_status_and_capture_goes_on(astronaut_video, caplog):
    """A calibration whose profile could not be saved killed the capture thread: the puppet
    eased to neutral while the status still read "ok"."""
    import time

    from tha.runtime.sources.arkit import ArkitConverter
    from tha.runtime.sources.webcam import CaptureSource

    def unwritable(settings):
        raise PermissionError("profile.yaml is read-only")

    converter = ArkitConverter()
    converter.on_calibrated = unwritable
    converter.request_calibration(frames=2)
    with CaptureSource(path=astronaut_video, converter=converter) as source:  # plays on its thread
        deadline = time.monotonic() + 60
        while source.status != "video ended" and time.monotonic() < deadline:
            time.sleep(0.05)
        # every frame was tracked to the end but the one whose calibration hook raised
        assert source.status == "video ended" and source.frames == len(SWEEP) + 1 - 1
    warnings = [r.getMessage() for r in caplog.records if "still capturing" in r.getMessage()]
    assert warnings == ["video: PermissionError: profile.yaml is read-only (still capturing)"]


def test_close_leaves_a_stuck_camera_to_the_capture_thread(astronaut_video):
    """A camera that stops delivering blocks read() in the driver for seconds: close() waited
    2 s, then released the capture and closed the tracker under the live read (and the thread
    then tracked with no tracker). The thread releases them itself once the read returns."""
    import threading

    from tha.runtime.sources.webcam import CaptureSource

    events: list[str] = []
    stuck, unstick = threading.Event(), threading.Event()

    class Logged:  # the real capture and tracker, their calls logged; the capture's next read blocks
        def __init__(self, inner):
            self.inner = inner

        def read(self):
            stuck.set()
            unstick.wait(60)  # as an unplugged camera's read blocks in the driver
            events.append("read returned")
            return self.inner.read()

        def track(self, rgb, time_ms):
            face = self.inner.track(rgb, time_ms)
            events.append("tracked")
            return face

        def release(self):
            events.append("released")
            self.inner.release()

        def close(self):
            events.append("tracker closed")
            self.inner.close()

        def __getattr__(self, name):
            return getattr(self.inner, name)

    source = CaptureSource(path=astronaut_video)  # real time: captured on its thread
    source.start()
    source._capture, source._tracker = Logged(source._capture), Logged(source._tracker)
    thread = source._thread
    assert stuck.wait(60)
    source.close()  # gives up waiting, the read still under way
    assert thread.is_alive() and "released" not in events and "tracker closed" not in events
    unstick.set()
    thread.join(60)
    assert not thread.is_alive()
    assert events[-4:] == ["read returned", "tracked", "released", "tracker closed"], events
    assert source._capture is None and source._tracker is None
    assert not source.status.startswith("error"), source.status


def test_missing_camera_is_a_status_not_a_crash():
    from tha.runtime.sources.webcam import CaptureSource

    with CaptureSource(device=97, realtime=False) as source:
        assert source.status.startswith("no camera")
        assert not source.step()
        assert source.status == "no camera: cannot open camera 97"
        np.testing.assert_array_equal(source.read(0.0), neutral_pose())


def test_a_base_install_without_opencv_says_which_extra(monkeypatch):
    """Without the [webcam] extra, `--source video|webcam` was a ModuleNotFoundError traceback."""
    import importlib.util

    from tha.runtime.sources.webcam import CaptureSource

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real_find_spec(name, *a))
    with pytest.raises(ThaError, match=r"needs OpenCV and MediaPipe \(not installed: cv2\); install tha's webcam extra \(`pip install -e '\.\[webcam\]'` in tha's folder\)"):
        CaptureSource(device=97, realtime=False).start()


def test_missing_video_and_task_file_are_clear_errors(tmp_path):
    from tha.runtime.sources.webcam import CaptureSource, LandmarkerTracker

    with pytest.raises(ThaError, match="not found"):
        CaptureSource(path=tmp_path / "none.mp4")
    with pytest.raises(ThaError, match="not found"):
        LandmarkerTracker(tmp_path / "face_landmarker.task")
    junk = tmp_path / "junk.task"
    junk.write_bytes(b"not a model")
    with pytest.raises(ThaError, match="not a FaceLandmarker model"):
        LandmarkerTracker(junk)


def test_a_file_opencv_opens_but_cannot_read_is_not_a_video(tmp_path):
    """A text file named .png "opened" and gave "drew 0 frames (video ended)", exit 0."""
    from cli import assert_one_line_error, tha

    text = tmp_path / "text.png"
    text.write_text("hello, not an image\n")
    result = tha("puppet", DEMO, text, "--source", "video", "--offscreen", timeout=120)
    assert_one_line_error(result, "cannot open video", "text.png", "is it a video file OpenCV can read?", code=2)
    assert "backend:" not in result.stderr  # said before the model loads


@pytest.mark.parametrize("camera, limit", [("-1", "greater than or equal to 0"),
                                           ("99999999999", "less than or equal to 63")])
def test_camera_index_is_bounded(camera, limit):
    """--camera -1 crashed OpenCV (exit 139, no message); a huge index was an overflow traceback."""
    from cli import assert_one_line_error, tha

    result = tha("puppet", DEMO, "--source", "webcam", f"--camera={camera}", "--offscreen", "--frames", "1",
                 timeout=120)
    assert_one_line_error(result, "--camera", limit, code=2)
