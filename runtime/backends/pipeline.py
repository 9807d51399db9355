"""The one frame path every engine plugs into:

    pose -> face patch -> pasted into the character (kept while the face pose holds)
         -> body morpher (warp + blend) -> display-ready RGBA8

An engine (PyTorch modules, the fast CPU plan, ONNX Runtime sessions, TensorRT engines) only
says how to run the two networks; the order, the face cache, the paste and the conversion are
written here once. The CUDA-graph backend replays these same stages as captured graphs.
"""
from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from tha.models.image import rgba8
from tha.models.poser import paste_face
from tha.models.pose import check_pose
from tha.runtime.backends.base import Backend, FaceCache, Frame


class Engine(Protocol):
    name: str

    def face(self, face_pose: Tensor) -> Tensor:
        """(1,39) face pose -> (1,4,128,128) patch."""

    def body(self, image: Tensor, pose: Tensor) -> Tensor:
        """(1,4,512,512) face-pasted image + (1,45) pose -> (1,4,512,512) posed image, a tensor
        the caller may keep."""

    def scope(self) -> AbstractContextManager:
        """What a frame runs inside (no grad, a CUDA stream, exact fp32...)."""


class PipelineBackend(Backend):
    """A character model behind one engine, rendered through the one frame path.

    ``render``, ``render_tensor`` and ``render_batch`` are safe to call from several threads:
    the pasted image, the face cache and the engine's buffers are shared between calls, so one
    lock (uncontended: well under a microsecond) serialises the frames."""

    def __init__(self, engine: Engine, image: Tensor, face_pose_size: int, pasted: Tensor | None = None):
        """``image`` (1,4,H,W) on the engine's device and dtype; ``pasted``: the buffer the face
        is pasted into (default a copy of the image; TensorRT passes its body input)."""
        self.engine = engine
        self.name = engine.name
        self.image = image
        self.pasted = image.clone() if pasted is None else pasted
        self.face_pose_size = face_pose_size
        self.face_cache = FaceCache(face_pose_size)
        self.lock = threading.Lock()  # held for a whole frame: the buffers above are reused

    def pose_tensor(self, pose: np.ndarray) -> Tensor:
        """The pose on the engine's device; every engine's pose enters here, so it is checked here."""
        p = torch.from_numpy(check_pose(pose).reshape(1, -1))
        return p.to(self.image.device, self.image.dtype, non_blocking=True)

    def pasted_image(self, pose: np.ndarray, p: Tensor) -> Tensor:
        """The character with this pose's face: the face network runs only when pose[:39] moves."""
        return self.face_cache.get(
            pose, lambda _: paste_face(self.image, self.engine.face(p[:, : self.face_pose_size]), out=self.pasted))

    def _posed(self, pose: np.ndarray) -> Tensor:
        p = self.pose_tensor(pose)
        return self.engine.body(self.pasted_image(pose, p), p)

    def render_tensor(self, pose: np.ndarray) -> Tensor:
        with self.lock, self.engine.scope():
            return self._posed(pose)

    def render(self, pose: np.ndarray) -> Frame:
        with self.lock, self.engine.scope():
            return Frame(rgba8(self._posed(pose)[0]))  # rgba8 copies: the frame is the caller's

