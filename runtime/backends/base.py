"""The backend contract: load a character model once, then pose -> frame, as fast as it can.

A frame is display-ready straight-alpha RGBA uint8 (H,W,4): on the host, or already on the
GPU (a CUDA tensor) so the viewer can hand it to OpenGL without a round trip.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Frame:
    rgba: np.ndarray | torch.Tensor  # (H,W,4) uint8; a torch tensor may live on CUDA

    @property
    def on_device(self) -> bool:
        return isinstance(self.rgba, torch.Tensor) and self.rgba.is_cuda

    def host(self) -> np.ndarray:
        if isinstance(self.rgba, torch.Tensor):
            return self.rgba.detach().to("cpu").numpy()
        return self.rgba


class Backend(ABC):
    """One character model behind one inference engine."""

    name: str = "?"

    @abstractmethod
    def render(self, pose: np.ndarray) -> Frame:
        """(45,) float32 pose -> display-ready frame."""

    def render_tensor(self, pose: np.ndarray) -> torch.Tensor:
        """(45,) pose -> (1,4,512,512) float32 in the [-1,1] space, for parity checks.
        Backends whose output is uint8 only (the fused graph) don't offer it."""
        raise NotImplementedError(f"backend {self.name} produces uint8 frames only")

    def render_batch(self, poses: np.ndarray) -> np.ndarray | torch.Tensor:
        """(N,45) poses -> (N,H,W,4) uint8 frames. This default renders them one by one;
        the CUDA backend runs the whole batch as one graph."""
        frames = [self.render(p).rgba for p in poses]
        return torch.stack(frames) if isinstance(frames[0], torch.Tensor) else np.stack(frames)

    def close(self) -> None:
        """Free engine resources."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FaceCache:
    """Keeps the face's result (the frame path keeps the face-pasted image) while pose[0:39] is
    unchanged: head turns and breathing then cost only the body morpher."""

    def __init__(self, face_pose_size: int = 39):
        self.face_pose_size = face_pose_size
        self._key: bytes | None = None
        self._patch = None
        self.hits = 0
        self.misses = 0

    def changed(self, pose: np.ndarray) -> bool:
        """Whether pose[:face_pose_size] differs from the previous call's (counted as a miss and
        remembered). For the CUDA backend, whose captured graphs hold the cached face themselves."""
        key = np.ascontiguousarray(pose[: self.face_pose_size], dtype=np.float32).tobytes()
        if key == self._key:
            self.hits += 1
            return False
        self._key = key
        self.misses += 1
        return True

    def get(self, pose: np.ndarray, compute):
        """The result for ``pose``: ``compute(pose)`` on a miss, the kept one otherwise."""
        if self.changed(pose):
            try:
                self._patch = compute(pose)
            except BaseException:
                self._key = None  # never pair this face pose with the previous patch
                raise
        return self._patch
