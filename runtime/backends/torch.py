"""PyTorch backend (CPU or CUDA): the reference student poser, with the face patch cached."""
from __future__ import annotations

import numpy as np
import torch

from tha.models.character import CharacterModel
from tha.models.poser import paste_face
from tha.runtime.backends.base import Backend, FaceCache, Frame
from tha.runtime.colour import tensor_to_rgba8


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: CharacterModel, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.face = model.face_morpher.to(self.device, dtype).eval()
        self.body = model.body_morpher.to(self.device, dtype).eval()
        self.image = model.image_tensor(dtype).to(self.device)[None]
        self.face_cache = FaceCache(self.face.config.pose_size)
        if self.device.type == "cuda":
            self.name = "torch-cuda"

    def _pose(self, pose: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(pose, dtype=np.float32), device=self.device).to(self.dtype)[None]

    @torch.no_grad()
    def render_tensor(self, pose: np.ndarray) -> torch.Tensor:
        p = self._pose(pose)
        patch = self.face_cache.get(pose, lambda _: self.face(p[:, : self.face.config.pose_size]))
        return self.body(paste_face(self.image, patch), p).blended_image

    def render(self, pose: np.ndarray) -> Frame:
        return Frame(tensor_to_rgba8(self.render_tensor(pose)[0]))
