"""PyTorch backend (CPU or CUDA): the reference student modules, upstream-shaped, in the one
frame path."""
from __future__ import annotations

import copy
from contextlib import AbstractContextManager, ExitStack

import torch
from torch import Tensor

from tha.models.character import CharacterModel
from tha.runtime.backends.cuda_env import precise_matmuls
from tha.runtime.backends.pipeline import PipelineBackend


class TorchEngine:
    def __init__(self, model: CharacterModel, device: torch.device, dtype: torch.dtype):
        # Copies: Module.to() moves in place, and the caller's model may serve other backends.
        self.face_morpher = copy.deepcopy(model.face_morpher).to(device, dtype).eval()
        self.body_morpher = copy.deepcopy(model.body_morpher).to(device, dtype).eval()
        self.exact = device.type == "cuda" and dtype == torch.float32
        self.name = "torch-cuda" if device.type == "cuda" else "torch"

    def face(self, face_pose: Tensor) -> Tensor:
        return self.face_morpher(face_pose)

    def body(self, image: Tensor, pose: Tensor) -> Tensor:
        return self.body_morpher(image, pose).blended_image

    def scope(self) -> AbstractContextManager:
        stack = ExitStack()
        stack.enter_context(torch.no_grad())
        if self.exact:  # fp32 on CUDA means fp32: no TF32 convolutions/matmuls (scoped, see precise_matmuls)
            stack.enter_context(precise_matmuls())
        return stack


class TorchBackend(PipelineBackend):
    def __init__(self, model: CharacterModel, device: str = "cpu", dtype: torch.dtype = torch.float32):
        device = torch.device(device)
        super().__init__(TorchEngine(model, device, dtype), model.image_tensor(dtype).to(device)[None],
                         model.face_morpher.config.pose_size)
