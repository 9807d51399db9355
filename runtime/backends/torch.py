"""PyTorch backend (CPU or CUDA): the reference student poser, with the face patch cached."""
from __future__ import annotations

import copy
from contextlib import nullcontext

import numpy as np
import torch

from tha.models.character import CharacterModel
from tha.models.poser import paste_face
from tha.runtime.backends.base import Backend, FaceCache, Frame
from tha.runtime.backends.cuda import exact_fp32
from tha.models.image import rgba8


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: CharacterModel, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        # Copies: Module.to() moves in place, and the caller's model may serve other backends.
        self.face = copy.deepcopy(model.face_morpher).to(self.device, dtype).eval()
        self.body = copy.deepcopy(model.body_morpher).to(self.device, dtype).eval()
        self.image = model.image_tensor(dtype).to(self.device)[None]
        self.face_cache = FaceCache(self.face.config.pose_size)
        if self.device.type == "cuda":
            self.name = "torch-cuda"

    def _pose(self, pose: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(pose, dtype=np.float32), device=self.device).to(self.dtype)[None]

    @torch.no_grad()
    def render_tensor(self, pose: np.ndarray) -> torch.Tensor:
        # fp32 on CUDA means fp32: no TF32 convolutions/matmuls (scoped, see exact_fp32).
        exact = self.device.type == "cuda" and self.dtype == torch.float32
        with exact_fp32() if exact else nullcontext():
            p = self._pose(pose)
            patch = self.face_cache.get(pose, lambda _: self.face(p[:, : self.face.config.pose_size]))
            return self.body(paste_face(self.image, patch), p).blended_image

    def render(self, pose: np.ndarray) -> Frame:
        return Frame(rgba8(self.render_tensor(pose)[0]))
