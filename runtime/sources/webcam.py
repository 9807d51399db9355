"""Webcam and video puppeteering: OpenCV capture -> MediaPipe face tracking -> FaceState.

Two trackers, one output (ARKit-style blend shapes + head angles, see ``arkit.py``):

- :class:`FaceMeshTracker` (default, offline: the model ships inside mediapipe 0.10.14):
  478 FaceMesh landmarks with irises; the head rotation comes from the landmark geometry
  (eye line and forehead-chin line, in 3-D) and the blend shapes are measured from it:
  eye openness per eye, iris offsets, jaw opening, lip width and corner lift, brow height.
- :class:`LandmarkerTracker` (``--face-landmarker FILE.task``): MediaPipe's FaceLandmarker
  gives the 52 blend shapes and a facial transformation matrix directly.
"""
from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from tha.models.errors import ThaError, failure_text
from tha.models.pose import neutral_pose
from tha.runtime.sources.arkit import ArkitConverter, FaceState, ease_to_neutral
from tha.runtime.sources.base import PoseSource

log = logging.getLogger(__name__)

# FaceMesh landmark indices ("right" = the person's right, on the image's left).
RIGHT_EYE = {"outer": 33, "inner": 133, "upper": 159, "lower": 145, "iris": 468, "brow": 105}
LEFT_EYE = {"outer": 263, "inner": 362, "upper": 386, "lower": 374, "iris": 473, "brow": 334}
FOREHEAD, CHIN = 10, 152
LIP_UPPER, LIP_LOWER, MOUTH_RIGHT, MOUTH_LEFT = 13, 14, 61, 291

# Geometry -> blend-shape scales, set on relaxed frontal faces (fractions of the distance
# between the outer eye corners, or of each eye's width). Calibration removes what differs
# from person to person.
EYE_CLOSED, EYE_OPEN, EYE_WIDE = 0.10, 0.34, 0.55  # lid gap / eye width
IRIS_REST_RISE = 0.07  # a level gaze sits this far above the corner line (/ eye width)
IRIS_RANGE = 0.20  # iris offset / eye width at a full look to one side
MOUTH_OPEN_FULL = 0.35  # lip gap for jawOpen = 1
MOUTH_WIDTH_REST, MOUTH_WIDTH_RANGE = 0.68, 0.20  # corner-to-corner width
SMILE_START, SMILE_FULL = 0.02, 0.10  # corner lift above the lips' middle
BROW_REST, BROW_RANGE = 0.27, 0.08  # brow height over the eye
# The forehead-chin line leans back from the face's vertical: a level head reads this pitch.
PITCH_BIAS = 9.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def head_rotation(points: np.ndarray) -> np.ndarray:
    """(3,3) rotation whose columns are the face's axes in the ARKit camera frame (x right,
    y up, z towards the camera): x from the right eye to the left eye, y up the face."""
    right = (points[RIGHT_EYE["outer"]] + points[RIGHT_EYE["inner"]]) / 2
    left = (points[LEFT_EYE["outer"]] + points[LEFT_EYE["inner"]]) / 2
    x = _unit(left - right)
    up = points[FOREHEAD] - points[CHIN]
    y = _unit(up - np.dot(up, x) * x)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def euler_degrees(rotation: np.ndarray) -> tuple[float, float, float]:
    """Rotation matrix -> (pitch, yaw, roll) degrees with R = Rz(roll) Ry(yaw) Rx(pitch) (scipy's
    extrinsic "xyz"); MediaPipe's transformation matrix is read the same way."""
    from scipy.spatial.transform import Rotation

    pitch, yaw, roll = Rotation.from_matrix(rotation).as_euler("xyz", degrees=True)
    return float(pitch), float(yaw), float(roll)


def _ramp(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def face_state_from_landmarks(landmarks: np.ndarray, width: int, height: int) -> FaceState:
    """(478,3) normalised FaceMesh landmarks -> FaceState, measured in the face's own frame so
    head rotation does not leak into the expression."""
    # Pixels, y up, z towards the camera (MediaPipe's z grows away from it, in x's scale).
    points = landmarks.astype(np.float64) * np.array([width, -height, -width])
    rotation = head_rotation(points)
    local = (points - points[[RIGHT_EYE["outer"], LEFT_EYE["outer"]]].mean(axis=0)) @ rotation
    eye_distance = float(np.linalg.norm(local[LEFT_EYE["outer"]] - local[RIGHT_EYE["outer"]]))
    shapes: dict[str, float] = {}
    for side, eye in (("Right", RIGHT_EYE), ("Left", LEFT_EYE)):
        outer, inner = local[eye["outer"]], local[eye["inner"]]
        eye_width = max(float(np.linalg.norm(inner[:2] - outer[:2])), 1e-6)
        opening = float(local[eye["upper"], 1] - local[eye["lower"], 1]) / eye_width
        shapes[f"eyeBlink{side}"] = 1.0 - _ramp(opening, EYE_CLOSED, EYE_OPEN)
        shapes[f"eyeWide{side}"] = _ramp(opening, EYE_OPEN, EYE_WIDE)
        centre = (outer + inner) / 2
        towards_nose = float(np.dot(local[eye["iris"], :2] - centre[:2], _unit(inner[:2] - outer[:2]))) / eye_width
        rise = float(local[eye["iris"], 1] - centre[1]) / eye_width - IRIS_REST_RISE
        shapes[f"eyeLookIn{side}"] = _ramp(towards_nose, 0.0, IRIS_RANGE)
        shapes[f"eyeLookOut{side}"] = _ramp(-towards_nose, 0.0, IRIS_RANGE)
        shapes[f"eyeLookUp{side}"] = _ramp(rise, 0.0, IRIS_RANGE)
        shapes[f"eyeLookDown{side}"] = _ramp(-rise, 0.0, IRIS_RANGE)
        brow = float(local[eye["brow"], 1] - centre[1]) / eye_distance
        shapes[f"browOuterUp{side}"] = _ramp(brow, BROW_REST, BROW_REST + BROW_RANGE)
        shapes[f"browDown{side}"] = _ramp(-brow, -BROW_REST, -BROW_REST + BROW_RANGE)
    shapes["browInnerUp"] = (shapes["browOuterUpLeft"] + shapes["browOuterUpRight"]) / 2

    gap = float(local[LIP_UPPER, 1] - local[LIP_LOWER, 1]) / eye_distance
    shapes["jawOpen"] = _ramp(gap, 0.0, MOUTH_OPEN_FULL)
    mouth_width = float(np.linalg.norm(local[MOUTH_LEFT, :2] - local[MOUTH_RIGHT, :2])) / eye_distance
    narrow = _ramp(-mouth_width, -MOUTH_WIDTH_REST, -MOUTH_WIDTH_REST + MOUTH_WIDTH_RANGE)
    shapes["mouthPucker"] = shapes["mouthFunnel"] = narrow
    wide = _ramp(mouth_width, MOUTH_WIDTH_REST, MOUTH_WIDTH_REST + MOUTH_WIDTH_RANGE)
    lip_middle = (local[LIP_UPPER, 1] + local[LIP_LOWER, 1]) / 2
    for side, corner in (("Right", MOUTH_RIGHT), ("Left", MOUTH_LEFT)):
        lift = float(local[corner, 1] - lip_middle) / eye_distance
        shapes[f"mouthSmile{side}"] = _ramp(lift, SMILE_START, SMILE_FULL)
        shapes[f"mouthFrown{side}"] = _ramp(-lift, SMILE_START, SMILE_FULL)
        shapes[f"mouthStretch{side}"] = wide
    pitch, yaw, roll = euler_degrees(rotation)
    return FaceState(shapes, (pitch - PITCH_BIAS, yaw, roll))


def require_tracking_packages() -> None:
    """One line naming the extra, instead of an import traceback in a base install."""
    import importlib.util

    missing = [name for name in ("cv2", "mediapipe") if importlib.util.find_spec(name) is None]
    if missing:
        raise ThaError(f"face tracking needs OpenCV and MediaPipe (not installed: {', '.join(missing)}); "
                       "install tha's webcam extra (`pip install -e '.[webcam]'` in tha's folder)")


class FaceMeshTracker:
    """MediaPipe FaceMesh with iris refinement (478 landmarks), bundled with mediapipe."""

    def __init__(self, static_images: bool = False):
        import mediapipe as mp

        # mediapipe 0.10.14 calls a protobuf API that warns on every run; nothing a user can act on
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_images, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def track(self, rgb: np.ndarray, time_ms: int) -> FaceState | None:
        result = self._mesh.process(np.ascontiguousarray(rgb))
        if not result.multi_face_landmarks:
            return None
        marks = result.multi_face_landmarks[0].landmark
        landmarks = np.array([(m.x, m.y, m.z) for m in marks], dtype=np.float64)
        return face_state_from_landmarks(landmarks, rgb.shape[1], rgb.shape[0])

    def close(self) -> None:
        self._mesh.close()


class LandmarkerTracker:
    """MediaPipe FaceLandmarker from a ``.task`` file: 52 blend shapes + transformation matrix."""

    def __init__(self, task_file: Path):
        if not Path(task_file).is_file():
            raise ThaError(f"face landmarker model '{task_file}' not found; download "
                           "face_landmarker.task from MediaPipe or leave out --face-landmarker")
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(task_file)),
            running_mode=vision.RunningMode.VIDEO, num_faces=1,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        try:
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as err:
            raise ThaError(f"'{task_file}' is not a FaceLandmarker model ({str(err).splitlines()[0]})") from None
        self._last_ms = -1

    def track(self, rgb: np.ndarray, time_ms: int) -> FaceState | None:
        import mediapipe as mp

        time_ms = max(time_ms, self._last_ms + 1)  # VIDEO mode needs strictly increasing stamps
        self._last_ms = time_ms
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._landmarker.detect_for_video(image, time_ms)
        if not result.face_blendshapes or not result.facial_transformation_matrixes:
            return None
        shapes = {c.category_name: float(c.score) for c in result.face_blendshapes[0] if c.category_name != "_neutral"}
        matrix = np.asarray(result.facial_transformation_matrixes[0])[:3, :3]
        return FaceState(shapes, euler_degrees(matrix))

    def close(self) -> None:
        self._landmarker.close()


class CaptureSource(PoseSource):
    """Camera (``device``) or video file (``path``) -> tracker -> converter.

    ``realtime=True`` tracks on a background thread (a file plays at its own frame rate);
    with ``realtime=False`` the caller advances with ``step()``, so an offline render turns
    each video frame into exactly one output frame. Without a face for ``stale_after``
    seconds the pose eases back to neutral; the status says why."""

    def __init__(self, device: int | None = None, path: str | Path | None = None,
                 converter: ArkitConverter | None = None, face_landmarker: str | Path | None = None,
                 realtime: bool = True, stale_after: float = 0.5, ease_seconds: float = 0.5):
        if (device is None) == (path is None):
            raise ThaError("give a camera index or a video file, not both")
        if path is not None and not Path(path).is_file():
            raise ThaError(f"video '{path}' not found; pass an existing video file")
        self.device = device
        self.path = Path(path) if path is not None else None
        self.name = "video" if path is not None else "webcam"
        self.converter = converter or ArkitConverter()
        self.face_landmarker = Path(face_landmarker) if face_landmarker else None
        self.realtime = realtime
        self.stale_after = stale_after
        self.ease_seconds = ease_seconds
        self.frames = 0
        self.faces = 0
        self.track_ms = 0.0  # mean tracking time per frame
        self.last_face: FaceState | None = None
        self._status = "starting"
        self._capture = None
        self._tracker = None
        self._fps = 30.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pose = neutral_pose()
        self._clock = 0.0  # seconds on the source's clock: video time, or monotonic for live capture
        self._face_at: float | None = None
        self._ended = False
        self._first: np.ndarray | None = None  # a video's first frame, read by start()

    def start(self) -> None:
        if self._capture is not None:
            return
        require_tracking_packages()
        import cv2

        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # a failure is said below, in one line
        try:
            self._capture = cv2.VideoCapture(str(self.path) if self.path is not None else self.device)
            if self.path is not None and self._capture.isOpened():
                # OpenCV "opens" some files that are no video (a text file named .png) and only
                # then reads nothing: without a first frame now, that would be an empty run
                # reported as a success
                ok, self._first = self._capture.read()
                if not ok:
                    self._capture.release()
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not self._capture.isOpened():
            what = f"video '{self.path}'" if self.path is not None else f"camera {self.device}"
            self._status = f"no camera: cannot open {what}"
            self._ended = True
            if self.path is not None:
                raise self._unreadable()
            return
        self._tracker = (LandmarkerTracker(self.face_landmarker) if self.face_landmarker
                         else FaceMeshTracker())
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self._fps = fps if fps and 1.0 <= fps <= 240.0 else 30.0
        if self.realtime:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _unreadable(self) -> ThaError:
        return ThaError(f"cannot open video '{self.path}'; is it a video file OpenCV can read?")

    @property
    def opened(self) -> bool:
        """Whether ``start`` opened the camera or file."""
        return self._capture is not None and self._capture.isOpened()

    def _loop(self) -> None:
        started = time.monotonic()
        try:
            while not self._stop.is_set() and self._step_or_report():
                if self.path is not None:  # play the file at its own speed
                    delay = started + self.frames / self._fps - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
        finally:
            # This thread owns the camera and tracker: a read() stuck in the driver outlives
            # close()'s wait, and freeing them under it is a use after free.
            self._release()

    def _step_or_report(self) -> bool:
        """``step`` on the capture thread: an unexpected failure (a tracker error, a calibration
        hook that raises) becomes the status and one logged line, and capture goes on. A dead
        thread would ease the puppet to neutral while the status still said "ok"."""
        try:
            return self.step()
        except Exception as err:  # noqa: BLE001 - anything: this thread must outlive it
            message = failure_text(err)
            if self._status != f"error: {message}":  # once, not once per frame
                log.warning("%s: %s (still capturing)", self.name, message)
            self._status = f"error: {message}"
            return True

    def step(self) -> bool:
        """Capture and track one frame; False at the end of a video or when the camera fails."""
        import cv2

        if self._capture is None or self._ended:
            return False
        if self._first is not None:  # read by start() to prove the file is a video
            ok, bgr, self._first = True, self._first, None
        else:
            ok, bgr = self._capture.read()
        if not ok:
            self._ended = True
            self._status = "video ended" if self.path is not None else f"no camera: camera {self.device} stopped"
            return False
        now = self.frames / self._fps if self.path is not None else time.monotonic()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        began = time.perf_counter()
        face = self._tracker.track(rgb, int(now * 1000))
        spent_ms = (time.perf_counter() - began) * 1000.0
        pose = self.converter.convert(face, now) if face is not None else None
        with self._lock:
            self.frames += 1
            self.track_ms += (spent_ms - self.track_ms) / self.frames
            self._clock = now
            if pose is not None:
                self.faces += 1
                self.last_face = face
                self._pose, self._face_at = pose, now
                self._status = "calibrating: hold still" if self.converter.calibrating else "ok"
            else:
                self._status = "no face"
        return True

    def calibrate(self, frames: int = 15) -> None:
        """Average the next ``frames`` tracked faces as the user's rest face."""
        self.converter.request_calibration(frames)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        """A video file's frame count as its header states it; None for a camera or when unknown."""
        if self.path is None or not self.opened:
            return None
        import cv2

        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        return count if count > 0 else None

    def read(self, now: float) -> np.ndarray:
        with self._lock:
            pose, face_at, clock = self._pose.copy(), self._face_at, self._clock
        if face_at is None:
            return neutral_pose()
        if self.realtime and self.path is None:
            clock = now  # live capture runs on the monotonic clock
        return ease_to_neutral(pose, clock - face_at - self.stale_after, self.ease_seconds)

    @property
    def status(self) -> str:
        return self._status

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)
            if thread.is_alive():
                return  # stuck in a read or a track: the thread releases both when it returns
        self._release()

    def _release(self) -> None:
        """Release the camera and close the tracker, once (from whichever of the capture thread
        and close() gets here while the other is not using them)."""
        with self._lock:
            capture, tracker, self._capture, self._tracker = self._capture, self._tracker, None, None
        if capture is not None:
            capture.release()
        if tracker is not None:
            tracker.close()
