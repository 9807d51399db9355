"""Puppeteer timings for `tha bench --puppet`: how long tracking takes, and how long a face
change takes to reach pixels (UDP datagram in -> pose -> rendered frame on the host)."""
from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _astronaut_frames(count: int) -> list[np.ndarray]:
    """A real face (skimage's astronaut photo) rolling slowly, like a webcam stream. The photo
    ships with scikit-image, a dev extra: without it this measurement is skipped, not failed."""
    from PIL import Image

    from tha.models.errors import ThaError

    try:
        from skimage import data
    except ImportError:
        raise ThaError("needs a face photo from scikit-image (`pip install scikit-image`)") from None
    photo = Image.fromarray(data.astronaut())
    angles = np.linspace(-10.0, 10.0, count)
    return [np.asarray(photo.rotate(a, resample=Image.BILINEAR, fillcolor=(0, 0, 0))) for a in angles]


def tracking_ms(frames: int) -> float:
    """Mean FaceMesh tracking + measurement time per frame (the first frame's detection excluded)."""
    from tha.runtime.sources.webcam import FaceMeshTracker

    images = _astronaut_frames(frames + 1)
    tracker = FaceMeshTracker()
    try:
        tracker.track(images[0], 0)
        start = time.perf_counter()
        for i, image in enumerate(images[1:], 1):
            tracker.track(image, i * 33)
        return (time.perf_counter() - start) * 1000.0 / frames
    finally:
        tracker.close()


def source_to_pixels_ms(model_dir: Path, frames: int) -> tuple[float, float]:
    """(mean ms from sending an iFacialMocap datagram to its pose being readable, mean ms from
    sending it to the rendered frame on the host), over ``frames`` head turns."""
    from tha.runtime.renderer import open_backend
    from tha.runtime.sources.arkit import FaceState
    from tha.runtime.sources.ifacialmocap import IFacialMocapSource, format_packet

    source = IFacialMocapSource(bind="127.0.0.1", port=0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    to_pose, to_pixels = [], []
    with open_backend("auto", model_dir, "cpu") as backend, source:
        backend.render(source.read(time.monotonic()))  # warm-up
        for i in range(frames):
            before = source.packets
            start = time.perf_counter()
            sender.sendto(format_packet(FaceState({}, (0.0, 8.0 * (-1) ** i, 0.0))), source.address)
            deadline = start + 5.0
            while source.packets == before and time.perf_counter() < deadline:
                time.sleep(0.0002)
            pose = source.read(time.monotonic())
            to_pose.append(time.perf_counter() - start)
            backend.render(pose).host()
            to_pixels.append(time.perf_counter() - start)
    sender.close()
    return float(np.mean(to_pose)) * 1000.0, float(np.mean(to_pixels)) * 1000.0


def measure_puppet(model_dir: Path, frames: int) -> list[tuple[str, float]]:
    """(name, milliseconds) rows for the puppeteers on CPU."""
    from tha.models.errors import ThaError

    receive, pixels = source_to_pixels_ms(Path(model_dir), frames)
    rows = [("iFacialMocap datagram -> pose ms", receive), ("iFacialMocap datagram -> pixels ms", pixels)]
    try:
        rows.insert(0, ("webcam tracking (FaceMesh) ms/frame", tracking_ms(max(frames, 5))))
    except ThaError as err:  # an optional extra missing: the other rows still stand
        log.warning("--puppet: webcam tracking not measured: %s", err)
    except ImportError as err:
        log.warning("--puppet: webcam tracking not measured: needs MediaPipe (%s; `pip install '.[webcam]'`)", err)
    return rows
