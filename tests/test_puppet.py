"""The ARKit -> THA converter (calibration, gain/offset, YAML profiles), the One Euro filter,
and `tha puppet` end to end on lambda_00 driven by a video of a real face."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tha.models.errors import ThaError
from tha.models.pose import LOWER, UPPER, index_of, neutral_pose
from tha.runtime.sources.arkit import (
    ArkitConverter, ConverterSettings, FaceState, load_profile, map_face, save_profile)
from tha.runtime.sources.filters import OneEuroFilter, OneEuroSettings
from cli import assert_one_line_error, tha

REPO = Path(__file__).resolve().parents[1]


def _pose_value(pose: np.ndarray, name: str) -> float:
    return float(pose[index_of(name)])


def test_each_expression_drives_its_own_parameters():
    s = ConverterSettings()
    cases = {
        "browInnerUp": ["eyebrow_raised_left", "eyebrow_raised_right"],
        "browDownRight": ["eyebrow_angry_right"],
        "eyeWideLeft": ["eye_surprised_left"],
        "cheekSquintRight": ["eye_raised_lower_eyelid_right"],
        "mouthPucker": ["mouth_uuu"],
        "mouthFrownLeft": ["mouth_lowered_corner_left", "mouth_lowered_corner_right"],
        "eyeLookUpLeft": ["iris_rotation_x"],
        "eyeLookOutRight": ["iris_rotation_y"],
    }
    for shape, driven in cases.items():
        pose = map_face(FaceState({shape: 1.0}), s)
        assert set(_moved(pose)) == set(driven), f"{shape} moved {_moved(pose)}"
    assert _pose_value(map_face(FaceState({"eyeLookOutLeft": 1.0}), s), "iris_rotation_y") < 0


def _moved(pose: np.ndarray) -> list[str]:
    from tha.models.pose import PARAMETER_NAMES

    return [PARAMETER_NAMES[i] for i in np.nonzero(np.abs(pose - neutral_pose()) > 1e-6)[0]]


def test_smile_turns_a_blink_into_a_happy_wink_and_jaw_plus_pucker_is_ooo():
    s = ConverterSettings()
    plain = map_face(FaceState({"eyeBlinkLeft": 0.8}), s)
    happy = map_face(FaceState({"eyeBlinkLeft": 0.8, "mouthSmileLeft": 0.8, "mouthSmileRight": 0.8}), s)
    assert _pose_value(plain, "eye_wink_left") == pytest.approx(1.0) and _pose_value(plain, "eye_happy_wink_left") == 0
    assert _pose_value(happy, "eye_happy_wink_left") == pytest.approx(1.0) and _pose_value(happy, "eye_wink_left") == 0
    assert _pose_value(happy, "mouth_raised_corner_left") == pytest.approx(0.8)
    ooo = map_face(FaceState({"jawOpen": 0.5, "mouthPucker": 0.6}), s)
    assert _pose_value(ooo, "mouth_ooo") == pytest.approx(1.0) and _pose_value(ooo, "mouth_aaa") == 0


def test_calibration_makes_the_rest_face_neutral_and_rescales_the_rest():
    rest = FaceState({"eyeBlinkLeft": 0.2, "browInnerUp": 0.3, "jawOpen": 0.05}, (6.0, -4.0, 2.0))
    converter = ArkitConverter()
    assert not np.allclose(converter.raw_pose(rest), neutral_pose())
    converter.request_calibration(frames=3)
    for _ in range(3):
        assert converter.calibrating
        converter.convert(rest)
    assert not converter.calibrating
    np.testing.assert_allclose(converter.raw_pose(rest), neutral_pose(), atol=1e-6)
    # Half-way from the rest blink to a full blink reads as half of the blink range.
    half = converter.raw_pose(FaceState({"eyeBlinkLeft": 0.6, "browInnerUp": 0.3, "jawOpen": 0.05}, (6.0, -4.0, 2.0)))
    assert _pose_value(half, "eye_wink_left") == pytest.approx(0.5 / 0.8)
    turned = converter.raw_pose(FaceState(rest.blendshapes, (6.0, -4.0 + 5.0, 2.0)))
    assert _pose_value(turned, "head_y") == pytest.approx(-0.5)


def test_gain_and_offset_then_clipping():
    settings = ConverterSettings(gain={"neck_z": 2.0, "mouth_aaa": 0.5}, offset={"breathing": 0.3, "head_x": -3.0})
    pose = ArkitConverter(settings).raw_pose(FaceState({"jawOpen": 0.4}, (0.0, 0.0, 6.0)))
    assert _pose_value(pose, "neck_z") == pytest.approx(0.8)
    assert _pose_value(pose, "mouth_aaa") == pytest.approx(0.5)
    assert _pose_value(pose, "breathing") == pytest.approx(0.3)
    assert _pose_value(pose, "head_x") == -1.0  # clipped to its range
    assert np.all(pose >= LOWER) and np.all(pose <= UPPER)


def test_a_puppet_breathes_on_the_animators_cycle():
    """Tracking sees no breathing; the converter adds the idle animator's cycle (4 s by default),
    under the profile's gain, and 0 switches it off."""
    face = FaceState({"jawOpen": 0.4}, (0.0, 0.0, 0.0))
    converter = ArkitConverter()
    breaths = [_pose_value(converter.raw_pose(face, t), "breathing") for t in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert breaths == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0], abs=1e-6)
    assert _pose_value(converter.raw_pose(face), "breathing") == 0.0  # no time, no breath
    halved = ArkitConverter(ConverterSettings(gain={"breathing": 0.5})).raw_pose(face, 2.0)
    assert _pose_value(halved, "breathing") == pytest.approx(0.5)
    still = ArkitConverter(ConverterSettings(breathing_cycle_duration=0.0)).raw_pose(face, 2.0)
    assert _pose_value(still, "breathing") == 0.0
    with pytest.raises(ThaError, match="breathing_cycle_duration -1.0 must be 0"):
        ConverterSettings(breathing_cycle_duration=-1.0)


@pytest.mark.parametrize("settings, message", [
    ({"breathing_cycle_duration": 1e-310}, "breathing_cycle_duration 1e-310 must be 0 (off) or seconds >= 0.1"),
    ({"head_range": (0.0, 10.0, 15.0)}, "head_range[0] 0.0 must be > 0 degrees"),
    ({"smoothing": OneEuroSettings(derivative_cutoff=0.0)}, "smoothing.derivative_cutoff 0.0 must be > 0 Hz"),
])
def test_profile_divisors_are_refused_up_front(settings, message):
    """Each of these divided by zero in the tracking thread, which died while the puppet ran on."""
    with pytest.raises(ThaError, match=re.escape(message)):
        ConverterSettings(**settings)


def test_profile_round_trip_and_the_shipped_default(tmp_path):
    shipped = load_profile(REPO / "configs" / "puppet_profile.yaml")
    assert shipped == ConverterSettings()  # the documented file is the defaults
    converter = ArkitConverter(ConverterSettings(eyebrow_down_mode="troubled", gain={"eye_wink_left": 1.2},
                                                 smoothing=OneEuroSettings(min_cutoff=0.7, beta=1.0)))
    converter.calibrate(FaceState({"jawOpen": 0.1}, (3.0, 1.0, -2.0)))
    path = tmp_path / "me.yaml"
    save_profile(path, converter.settings)
    again = load_profile(path)
    assert again == converter.settings
    assert again.neutral_head == (3.0, 1.0, -2.0) and again.neutral_blendshapes == {"jawOpen": 0.1}


@pytest.mark.parametrize("text, message", [
    ("gain: {eye_wink_lft: 2}", "unknown pose parameter"),
    ("smothing: {beta: 1}", "did you mean 'smoothing'"),
    ("eyebrow_down_mode: sad", "eyebrow_down_mode"),
    ("head_range: [1, 2]", "head_range"),
    ("gain: {mouth_aaa: [1]}", "gain.mouth_aaa: [1] is not a number"),
    ("smoothing: {betta: 1}", "did you mean 'beta'"),
    ("smile_min: high", "smile_min: Value 'high'"),
    ("[1, 2", "not valid YAML"),
    ("[1, 2]", "must be a mapping"),
    # these three were accepted: NaN poses, a smile that never counts, eyes that never close
    ("smile_min: .nan", "smile_min nan must be a finite number"),
    ("smile_min: 0.7\nsmile_max: 0.5", "smile_min 0.7 must be below smile_max 0.5"),
    ("blink_max: 0", "blink_max 0 must be > 0"),
    ("neutral_head: [0, .inf, 0]", "neutral_head[1] inf must be a finite number"),
    ("smoothing: {beta: .nan}", "smoothing.beta nan must be a finite number"),
    ("folder", "is a folder; give a YAML file"),
])
def test_bad_profiles_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    if text == "folder":
        path.mkdir()  # it said "not found"
    else:
        path.write_text(text)
    with pytest.raises(ThaError) as err:
        load_profile(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"puppet profile '{path}'")


def test_one_euro_removes_jitter_when_still_and_follows_a_fast_move():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(OneEuroSettings(min_cutoff=1.0, beta=0.5))
    times = np.arange(120) / 60.0
    noisy = 0.3 + 0.02 * rng.standard_normal((60, 3))
    still = np.array([f.filter(x, t) for x, t in zip(noisy, times[:60])])
    assert np.all(still[20:].std(axis=0) < 0.4 * noisy[20:].std(axis=0))  # jitter cut to under 40 %
    assert np.abs(still[20:].mean(axis=0) - 0.3).max() < 0.01
    moved = np.array([f.filter(np.full(3, 0.9), t) for t in times[60:]])  # a fast head turn
    assert moved[5].min() > 0.75  # within 1/12 s most of the way there
    assert np.abs(moved[-1] - 0.9).max() < 1e-3


def _run_tha(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    return tha(*args, timeout=timeout, env={"OMP_NUM_THREADS": "2"})


def test_puppet_bad_input_is_one_line(lambda00_dir, tmp_path):
    result = _run_tha("puppet", str(lambda00_dir), "--source", "video")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: --source video needs the video file")
    result = _run_tha("puppet", str(lambda00_dir), "--source", "video", str(tmp_path / "none.mp4"), "--offscreen")
    assert_one_line_error(result, "video", "not found", code=2)
    # headless, a camera that does not open is an error (a window shows it on the panel instead)
    result = _run_tha("puppet", str(lambda00_dir), "--source", "webcam", "--camera", "63", "--offscreen",
                      "--frames", "1")  # the highest index --camera takes
    assert result.returncode == 2 and "error: cannot open camera 63; pick another --camera" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # OpenCV's own log lines included


def test_puppet_video_offscreen_refuses_fps(lambda00_dir, tmp_path):
    """Headless, a video is drawn one frame per video frame and recorded at the video's own
    rate: a given --fps was silently ignored, so it is refused, before the model loads."""
    from skimage import data

    from tha.runtime.video import VideoWriter

    video = tmp_path / "face.mp4"
    with VideoWriter(video, fps=10) as writer:
        for _ in range(2):
            photo = data.astronaut()
            writer.write(np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)]))
    out = tmp_path / "out.mp4"
    result = _run_tha("puppet", str(lambda00_dir), "--source", "video", str(video), "--offscreen",
                      "--record", str(out), "--fps", "24")
    assert_one_line_error(result, "--fps does not apply to --source video --offscreen", "video's own frame rate",
                          code=2)
    assert not out.exists()


def over_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    return (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.int16)


@pytest.mark.slow
def test_puppet_video_offscreen_moves_the_head(lambda00_dir, tmp_path):
    from skimage import data, transform

    from tha.models.image import load_rgba
    from tha.runtime.video import VideoWriter

    photo = data.astronaut()
    video = tmp_path / "turn.mp4"
    with VideoWriter(video, fps=10) as writer:
        for angle in (0.0, 0.0, 15.0):  # still, still, then the head rolls
            rgb = (transform.rotate(photo, angle, mode="edge") * 255).round().astype(np.uint8)
            writer.write(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    out = tmp_path / "frames"
    result = _run_tha("puppet", str(lambda00_dir), "--source", "video", str(video), "--offscreen",
                      "--record", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3/3" in result.stderr  # the progress bar knows the video's length (it showed no total)
    # Seen as a viewer shows it, over white: a nearly transparent pixel's straight colour is noise.
    frames = [over_white(load_rgba(p)) for p in sorted(out.glob("frame_*.png"))]
    assert len(frames) == 3

    def changed(a, b, rows, cols) -> float:
        return float((np.abs(a - b)[rows, cols].max(axis=-1) > 30).mean())

    head, legs = (slice(60, 220), slice(170, 350)), (slice(400, 512), slice(0, 512))
    assert changed(frames[0], frames[1], *head) < 0.02  # the face did not move
    assert changed(frames[0], frames[2], *head) > 0.1  # the head rolled ...
    assert changed(frames[0], frames[2], *head) > 2 * changed(frames[0], frames[2], *legs)  # ... more than the legs


@pytest.mark.slow
def test_bench_puppet_reports_tracking_and_latency(lambda00_dir):
    from tha.runtime.sources.bench import measure_puppet

    rows = dict(measure_puppet(lambda00_dir, 1))
    assert set(rows) == {"webcam tracking (FaceMesh) ms/frame", "iFacialMocap datagram -> pose ms",
                         "iFacialMocap datagram -> pixels ms"}
    assert 0 < rows["iFacialMocap datagram -> pose ms"] < rows["iFacialMocap datagram -> pixels ms"]
    assert rows["webcam tracking (FaceMesh) ms/frame"] > 0


def test_calibrate_flag_writes_the_rest_face_into_the_profile(tmp_path):
    from tha.runtime.puppeteers import load_converter

    path = tmp_path / "new_profile.yaml"  # --calibrate may name a profile that does not exist yet
    converter = load_converter(path, calibrate=True)
    rest = FaceState({"eyeSquintLeft": 0.25}, (4.0, 2.0, -1.0))
    for i in range(15):
        assert not path.exists()
        converter.convert(rest, i / 30)
    saved = load_profile(path)
    assert saved.neutral_head == (4.0, 2.0, -1.0) and saved.neutral_blendshapes == {"eyeSquintLeft": 0.25}
    assert load_converter(path, calibrate=False).settings == saved
