"""OBS output: frames to a virtual camera through pyvirtualcam (v4l2loopback on Linux, the OBS
virtual camera on Windows and macOS). Cameras carry no alpha: frames are composited over a
key colour that OBS can remove with a colour-key filter."""
from __future__ import annotations

import sys

import numpy as np

from tha.models.errors import ThaError
from tha.runtime.video import composite

# A green no anime palette uses, for OBS's chroma/colour key.
KEY_COLOUR = (0, 255, 0)


def _hint() -> str:
    if sys.platform.startswith("linux"):
        return ("load the loopback device: `sudo apt-get install v4l2loopback-dkms && "
                "sudo modprobe v4l2loopback devices=1 exclusive_caps=1`")
    return "install OBS Studio and start its virtual camera once so the device exists"


class VirtualCamera:
    def __init__(self, width: int = 512, height: int = 512, fps: float = 30.0,
                 background: tuple[int, int, int] = KEY_COLOUR, device: str | None = None):
        try:
            import pyvirtualcam
        except ImportError:
            raise ThaError("--virtual-camera needs pyvirtualcam: install tha's virtualcam extra (`pip install -e '.[virtualcam]'` in tha's folder)") from None
        self.background = background
        try:
            self._camera = pyvirtualcam.Camera(width=width, height=height, fps=fps, device=device)
        except (RuntimeError, OSError, ValueError) as err:
            raise ThaError(f"no virtual camera device ({str(err).splitlines()[0]}); {_hint()}") from None

    @property
    def device(self) -> str:
        return self._camera.device

    def send(self, rgba: np.ndarray) -> None:
        self._camera.send(composite(rgba, self.background))

    def close(self) -> None:
        self._camera.close()

    def __enter__(self) -> "VirtualCamera":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
