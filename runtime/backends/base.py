"""The backend contract: load a character model once, then pose -> frame, as fast as it can.

A frame is display-ready straight-alpha RGBA uint8 (H,W,4). ``Frame.rgba`` is what the engine
made: a ``torch.Tensor`` on the CPU (torch on the CPU, fastcpu, ort, ort-cuda, ort-trt) or on the
GPU (cuda, cuda-fused, torch-cuda, trt, torch with --device cuda: no round trip before OpenGL), or a
NumPy array (ort-fused). ``Frame.host()`` always gives a
NumPy array on the host.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from tha.models.errors import ThaError
from tha.models.pose import POSE_SIZE


def check_poses(poses: np.ndarray) -> np.ndarray:
    """``poses`` as an (N,45) float32 array with N >= 1, or a one-line ThaError (a single (45,)
    pose used to end in an IndexError deep inside)."""
    batch = np.asarray(poses, dtype=np.float32)
    if batch.ndim != 2 or batch.shape[1] != POSE_SIZE:
        raise ThaError(f"render_batch takes (N,{POSE_SIZE}) poses, got shape {batch.shape}; "
                       f"render(pose) takes one ({POSE_SIZE},) pose")
    if batch.shape[0] == 0:  # the frame size is the engine's: no empty batch to return without it
        raise ThaError(f"render_batch needs at least one pose, got shape {batch.shape}")
    return batch


@dataclass(frozen=True)
class Frame:
    rgba: np.ndarray | torch.Tensor  # (H,W,4) uint8: a CPU or CUDA tensor, or a NumPy array

    @property
    def on_device(self) -> bool:
        return isinstance(self.rgba, torch.Tensor) and self.rgba.is_cuda

    def host(self) -> np.ndarray:
        if isinstance(self.rgba, torch.Tensor):
            return self.rgba.detach().to("cpu").numpy()
        return self.rgba


class Backend(ABC):
    """One character model behind one inference engine.

    Every backend checks each pose (``check_pose``: a one-line ThaError for a wrong size or
    NaN/inf) and may be called from several threads at once (a call waits for the one in
    progress where the engine reuses buffers)."""

    name: str = "?"

    @abstractmethod
    def render(self, pose: np.ndarray) -> Frame:
        """(45,) float32 pose -> display-ready frame (see the module docstring for its type)."""

    def render_tensor(self, pose: np.ndarray) -> torch.Tensor:
        """(45,) pose -> (1,4,512,512) float32 in the [-1,1] space, for parity checks.
        Backends whose output is uint8 only (the fused graph) don't offer it."""
        raise NotImplementedError(f"backend {self.name} produces uint8 frames only")

    def render_batch(self, poses: np.ndarray) -> np.ndarray | torch.Tensor:
        """(N,45) poses, N >= 1 -> (N,H,W,4) uint8 frames: a torch.Tensor (on the GPU for the
        CUDA backends) when the frames are tensors, else a NumPy array. A (45,) pose or N == 0
        is a ThaError. This default renders them one by one; the CUDA backend runs the whole
        batch as one graph."""
        frames = [self.render(p).rgba for p in check_poses(poses)]
        return torch.stack(frames) if isinstance(frames[0], torch.Tensor) else np.stack(frames)

    def close(self) -> None:
        """Free engine resources."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FaceCache:
    """Keeps the face's result (the frame path keeps the face-pasted image) while the face pose,
    pose[:face_pose_size], is unchanged: head turns and breathing then cost only the body morpher."""

    def __init__(self, face_pose_size: int):
        self.face_pose_size = face_pose_size
        self._key: bytes | None = None
        self._kept = None  # compute's result for the face pose in _key
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
                self._kept = compute(pose)
            except BaseException:
                self._key = None  # never pair this face pose with the previous result
                raise
        return self._kept
