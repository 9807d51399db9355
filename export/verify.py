"""Exported graphs against the PyTorch student: the error figures and their pass/fail bounds."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tha.models.character import CharacterModel
from tha.models.image import tensor_to_rgba
from tha.models.pose import LOWER, UPPER
from tha.models.poser import StudentPoser

# fp32 bounds in the [-1,1] space; uint8 output: within 1 of the reference on 99.9% of pixels.
MAX_ABS = 2e-3
MEAN_ABS = 1e-5
UINT8_WITHIN_ONE = 0.999
MIN_PSNR_DB = 40.0


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    """(n,45) float32 poses uniform over every parameter's range."""
    rng = np.random.default_rng(seed)
    return (LOWER + (UPPER - LOWER) * rng.random((n, len(LOWER)))).astype(np.float32)


@torch.no_grad()
def torch_stages(model: CharacterModel, poses: np.ndarray) -> dict[str, torch.Tensor]:
    """The PyTorch student's face patches (N,4,128,128), face-pasted images and blended images
    (N,4,512,512), one pose at a time."""
    poser = StudentPoser.from_model(model).eval()
    image = model.image_tensor()[None]
    stages = [poser.stages(image, torch.from_numpy(p[None])) for p in poses]
    return {name: torch.cat([s[key] for s in stages]) for name, key in
            (("patch", "face_morpher_output"), ("pasted", "face_morphed_full"), ("image", "image"))}


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, peak: float) -> float:
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


@dataclass
class Parity:
    graph: str
    max_abs: float
    mean_abs: float
    psnr_db: float
    within_one: float | None = None  # uint8 graphs only
    ok: bool = True

    def line(self) -> str:
        parts = [f"{self.graph}: max abs {self.max_abs:.2e}, mean abs {self.mean_abs:.2e}, PSNR {self.psnr_db:.1f} dB"]
        if self.within_one is not None:
            parts.append(f"within +-1 on {100 * self.within_one:.3f}% of pixels")
        return ", ".join(parts) + ("" if self.ok else "  FAIL")

    def as_dict(self) -> dict:
        return asdict(self)


def tensor_parity(graph: str, got: torch.Tensor, want: torch.Tensor, fp16: bool) -> Parity:
    """Float output in [-1,1]: fp32 bounds, or the PSNR bound (on [0,1]) for fp16."""
    d = (got.double() - want.double()).abs()
    value = psnr((got + 1) / 2, (want + 1) / 2, 1.0)
    ok = value >= MIN_PSNR_DB if fp16 else (d.max() <= MAX_ABS and d.mean() <= MEAN_ABS)
    return Parity(graph, float(d.max()), float(d.mean()), value, ok=bool(ok))


def rgba_parity(graph: str, got: np.ndarray, want: np.ndarray, fp16: bool) -> Parity:
    """uint8 output: every channel within 1 on 99.9% of pixels for fp32, the PSNR bound for
    fp16. A pixel transparent in both has no colour to compare (un-premultiplying an alpha of
    1e-8 turns rounding noise into any colour at all), so its RGB is left out."""
    got, want = got.astype(np.int16), want.astype(np.int16)
    invisible = (got[..., 3:] == 0) & (want[..., 3:] == 0)
    got, want = np.where(invisible, 0, got), np.where(invisible, 0, want)
    d = np.abs(got - want)
    within = float(np.mean(d.max(axis=-1) <= 1))
    value = psnr(got, want, 255.0)
    ok = value >= MIN_PSNR_DB if fp16 else within >= UINT8_WITHIN_ONE
    return Parity(graph, float(d.max()), float(d.mean()), value, within, ok)


def verify_graphs(model: CharacterModel, export_dir: Path, poses: np.ndarray, fp16: bool,
                  reference: dict[str, torch.Tensor] | None = None) -> list[Parity]:
    """Each exported graph against its PyTorch counterpart on ``poses``: face.onnx against the
    face morpher, body.onnx against the body morpher given the same face-pasted image, and
    student.onnx's RGBA against the reference frames."""
    from tha.export.onnx_graphs import graph_file
    from tha.export.sessions import open_session

    want = torch_stages(model, poses) if reference is None else reference
    face, body, student = (open_session(export_dir / graph_file(name, fp16)) for name in ("face", "body", "student"))
    face_pose = model.face_morpher.config.pose_size
    patches = [face.run(None, {"pose": p[None, :face_pose]})[0] for p in poses]
    images = [body.run(None, {"image": pasted[None].numpy(), "pose": p[None]})[0]
              for pasted, p in zip(want["pasted"], poses)]
    rgba = np.stack([student.run(None, {"pose": p[None]})[0] for p in poses])
    tag = " fp16" if fp16 else ""
    return [tensor_parity(f"face{tag}", torch.from_numpy(np.concatenate(patches)), want["patch"], fp16),
            tensor_parity(f"body{tag}", torch.from_numpy(np.concatenate(images)), want["image"], fp16),
            rgba_parity(f"student{tag}", rgba, np.stack([tensor_to_rgba(w) for w in want["image"]]), fp16)]
