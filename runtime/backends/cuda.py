"""The CUDA backend: the folded student (``tha.export.folded``) replayed as CUDA graphs.

Per frame the host uploads the pose (45 floats) and replays one graph of the frame path's
stages (``tha.runtime.backends.pipeline``): face (on a face-cache miss) + paste + body +
RGBA8, all into static buffers, so nothing is allocated,
copied or synchronised beyond that upload. The frame stays on the GPU (for the viewer's
CUDA-GL interop) until someone calls ``Frame.host()``. ``render_batch`` runs N poses through
the same modules under ``torch.func.vmap`` (the fused kernels take the batch as it is): one
graph per batch size used.
"""
from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from tha.export.folded import FoldedBody, FoldedFace, fp16_gemms, per_sample
from tha.models.character import CharacterModel
from tha.models.errors import ThaError
from tha.models.image import rgba8
from tha.models.pose import POSE_SIZE, check_pose
from tha.models.poser import paste_face
from tha.runtime.backends import PRECISIONS
from tha.runtime.backends.base import Backend, FaceCache, Frame, check_poses
from tha.runtime.backends.cuda_env import precise_matmuls, require_cuda


def _cpu_copy(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).to("cpu", torch.float32)


def folded_student(model: CharacterModel, precision: str, device: torch.device | str) -> tuple[FoldedFace, FoldedBody]:
    """The folded face and body this backend runs: fp32, or fp16 GEMMs with fp32 first layers,
    warp and blend (``fp16_gemms``). Folded from float32 CPU copies (the model may already sit
    elsewhere; don't move it)."""
    face = FoldedFace(_cpu_copy(model.face_morpher)).to(device).eval()
    body = FoldedBody(_cpu_copy(model.body_morpher)).to(device).eval()
    if precision == "fp16":
        fp16_gemms(face)
        fp16_gemms(body)
    return face, body


def _fused(face: FoldedFace, body: FoldedBody, device: torch.device) -> tuple[Callable, Callable]:
    """(face pose -> patches, pose -> body fields) as Triton kernels (``fused_levels``) where
    this GPU runs them, layer by layer where not."""
    try:
        from tha.runtime.backends.fused_levels import FusedBody, face_patches
    except ImportError as err:
        raise ThaError(f"--backend cuda-fused needs Triton 3.2 or newer ({err}); `pip install -U triton`, "
                       "or use --backend cuda") from None
    return face_patches(face, device), FusedBody(body, device).fields


# One capture at a time in the process, as PyTorch's graph docs require (two backends may be
# built at once on different threads).
_CAPTURING = threading.Lock()


def capture(run: Callable[[], None], pool=None) -> torch.cuda.CUDAGraph:
    """``run`` (which only writes static buffers) as a CUDA graph, warmed up on a side stream
    first as PyTorch's graph docs require."""
    with _CAPTURING:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: `tha serve` builds a new student's backend while the old one keeps
        # rendering on another thread; the default ("global") fails this capture on that
        # thread's allocations and synchronising copies.
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            run()
        return graph


class CudaBackend(Backend):
    """Folded student, static buffers, CUDA graphs; fp16 GEMMs (fast) or fp32 (exact, no TF32)."""

    def __init__(self, model: CharacterModel, precision: str = "fp16", device: str = "cuda", fused: bool = False):
        """``fused``: the face and the body's narrower levels as Triton kernels (``fused_levels``; fp16 only)."""
        require_cuda("--backend cuda-fused" if fused else "--backend cuda")
        self._setup(model, precision, torch.device(device), fused)
        with self._scope():
            self._full = capture(lambda: self._frame(face=True))
            self._body_only = capture(lambda: self._frame(face=False), pool=self._full.pool())

    def _setup(self, model: CharacterModel, precision: str, device: torch.device, fused: bool) -> None:
        """Modules and static buffers: everything but the graphs (the tests run this on the CPU)."""
        if precision not in PRECISIONS:
            raise ThaError(f"unknown precision '{precision}'; choose {' or '.join(PRECISIONS)}")
        if fused and precision != "fp16":
            raise ThaError("--backend cuda-fused runs fp16 GEMMs; for fp32 use --backend cuda --precision fp32")
        self.name = "cuda-fused" if fused else f"cuda-{precision}"
        self.lock = threading.RLock()  # the graphs' static buffers are shared by every call
        self.precision = precision
        self.device = device
        self.face, self.body = folded_student(model, precision, self.device)
        # Both take N poses: (N,39) -> (N,4,128,128) patches, (N,45) -> (N,7,512,512) fields.
        if fused:
            self.face_patches, self.body_fields = _fused(self.face, self.body, self.device)
        else:
            self.face_patches, self.body_fields = per_sample(self.face), per_sample(self.body.fields)
        self.face_pose_size = model.face_morpher.config.pose_size
        self.image = model.image_tensor()[None].to(self.device)
        self.face_cache = FaceCache(self.face_pose_size)
        h, w = self.image.shape[-2:]
        self.pose = torch.zeros(1, POSE_SIZE, device=self.device)  # the only per-frame upload
        self.pasted = self.image.clone()  # the image with the current face
        self.posed = torch.zeros(1, 4, h, w, device=self.device)  # float32 network output
        self.rgba = torch.zeros(h, w, 4, dtype=torch.uint8, device=self.device)
        self._batch: dict[int, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}

    @contextmanager
    def _scope(self) -> Iterator[None]:
        """No grad; precise matmuls (kernels are chosen at capture, so capture is what counts)."""
        with torch.no_grad(), precise_matmuls():
            yield

    def _frame(self, face: bool) -> None:
        """The frame path into the static buffers (eager; what the graphs replay)."""
        if face:
            paste_face(self.image, self.face_patches(self.pose[:, : self.face_pose_size]), out=self.pasted)
        self.posed.copy_(self.body.compose(self.pasted, self.body_fields(self.pose)))
        self.rgba.copy_(rgba8(self.posed[0]))

    def _upload(self, pose: np.ndarray) -> bool:
        """Pose to the device (pageable source: staged at once, no sync); True on a face-cache miss."""
        pose = check_pose(pose).reshape(1, -1)
        self.pose.copy_(torch.from_numpy(pose), non_blocking=True)
        return self.face_cache.changed(pose[0])

    def render(self, pose: np.ndarray) -> Frame:
        with self.lock:
            (self._full if self._upload(pose) else self._body_only).replay()
            return Frame(self.rgba.clone())  # the static buffer is rewritten by the next frame

    def render_eager(self, pose: np.ndarray) -> Frame:
        """The same frame without the graph (to check that replay equals eager)."""
        with self.lock:
            miss = self._upload(pose)
            with self._scope():
                self._frame(face=miss)
            return Frame(self.rgba.clone())

    def render_tensor(self, pose: np.ndarray) -> Tensor:
        with self.lock:
            self.render(pose)
            return self.posed.clone()

    def _batch_run(self, poses: Tensor, out: Tensor) -> None:
        vmap = torch.func.vmap
        patches = self.face_patches(poses[:, : self.face_pose_size])
        pasted = vmap(paste_face, in_dims=(None, 0))(self.image, patches[:, None])
        posed = vmap(self.body.compose)(pasted, self.body_fields(poses)[:, None])
        out.copy_(vmap(rgba8)(posed[:, 0]))

    def render_batch(self, poses: np.ndarray) -> Tensor:
        """(N,45) poses -> (N,H,W,4) uint8 frames on the GPU; one graph per N (no face cache)."""
        with self.lock:
            return self._render_batch(np.ascontiguousarray(check_poses(poses)))

    def _render_batch(self, poses: np.ndarray) -> Tensor:
        n = len(poses)
        if n not in self._batch:
            h, w = self.image.shape[-2:]
            static = torch.zeros(n, POSE_SIZE, device=self.device)
            out = torch.zeros(n, h, w, 4, dtype=torch.uint8, device=self.device)
            with self._scope():
                graph = capture(lambda: self._batch_run(static, out))
            self._batch[n] = (graph, static, out)
        graph, static, out = self._batch[n]
        static.copy_(torch.from_numpy(poses), non_blocking=True)
        graph.replay()
        return out.clone()

    def close(self) -> None:
        self._batch.clear()

