"""How long getting a frame on screen takes: upload + draw, ms per frame, headless."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np


def _time_frames(canvas, frames: list, upload, count: int) -> float:
    from OpenGL import GL

    upload(frames[0])  # first use allocates; keep it out of the timing
    canvas.draw(canvas.size)
    GL.glFinish()
    start = time.perf_counter()
    for i in range(count):
        upload(frames[i % len(frames)])
        canvas.draw(canvas.size)
        GL.glFinish()  # count the GL work, not just its submission
    return (time.perf_counter() - start) * 1000.0 / count


def measure_viewer(model_dir: Path, frames: int = 100) -> list[tuple[str, float]]:
    """Rows of (what, ms/frame): PBO upload + draw of the character's 512x512 frame, and
    CUDA-GL interop + draw where CUDA exists. The frames alternate between the image and its
    mirror so no upload is skipped as unchanged."""
    import tha.viewer  # noqa: F401  (EGL platform for PyOpenGL)
    import torch

    from tha.models.character import load_character_model
    from tha.viewer.canvas import Canvas
    from tha.viewer.offscreen import Offscreen

    image = load_character_model(model_dir).image_rgba
    host = [np.ascontiguousarray(image), np.ascontiguousarray(image[:, ::-1])]
    size = (image.shape[1], image.shape[0])
    surface = Offscreen(size)
    canvas = Canvas(size)
    rows: list[tuple[str, float]] = []
    try:
        surface.bind()
        rows.append((f"viewer PBO upload+draw {size[0]}x{size[1]} (ms/frame)", _time_frames(canvas, host, canvas.upload, frames)))
        if torch.cuda.is_available():
            device = [torch.from_numpy(f).cuda() for f in host]
            try:
                ms = _time_frames(canvas, device, canvas.upload_device, frames)
                rows.append((f"viewer CUDA-GL interop upload+draw {size[0]}x{size[1]} (ms/frame)", ms))
            except Exception as err:  # e.g. a Mesa GL context that CUDA cannot share
                warnings.warn(f"CUDA-GL interop not measured: {err}")
    finally:
        canvas.close()
        surface.close()
    return rows
