"""Exported graphs against the PyTorch student: the error figures and their pass/fail bounds."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tha.models.character import CharacterModel
from tha.models.image import tensor_to_rgba
from tha.models.pose import POSE_PARAMETERS
from tha.models.poser import StudentPoser

# fp32 bounds in the [-1,1] space; uint8 output: within 1 of the reference on 99.9% of pixels.
MAX_ABS = 2e-3
MEAN_ABS = 1e-5
UINT8_WITHIN_ONE = 0.999
MIN_PSNR_DB = 40.0


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    """(n,45) float32 poses uniform over every parameter's range."""
    rng = np.random.default_rng(seed)
    lower = np.array([p.lower for p in POSE_PARAMETERS], dtype=np.float32)
    upper = np.array([p.upper for p in POSE_PARAMETERS], dtype=np.float32)
    return (lower + (upper - lower) * rng.random((n, len(lower)))).astype(np.float32)


@torch.no_grad()
def torch_reference(model: CharacterModel, poses: np.ndarray) -> torch.Tensor:
    """(N,4,512,512) blended images from the PyTorch student, one pose at a time."""
    poser = StudentPoser.from_model(model).eval()
    image = model.image_tensor()[None]
    return torch.cat([poser.pose(image, torch.from_numpy(p[None])) for p in poses])


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
                  reference: torch.Tensor | None = None) -> list[Parity]:
    """Run the exported two-graph and fused forms on ``poses``; compare with PyTorch."""
    from tha.runtime.backends.ort import OrtBackend, OrtFusedBackend

    want = torch_reference(model, poses) if reference is None else reference
    split = OrtBackend(model.image_tensor(), export_dir, "cpu", fp16)
    fused = OrtFusedBackend(export_dir, "cpu", fp16)
    got = torch.cat([split.render_tensor(p) for p in poses])
    got_rgba = np.stack([fused.render(p).host() for p in poses])
    want_rgba = np.stack([tensor_to_rgba(w) for w in want])
    tag = " fp16" if fp16 else ""
    return [tensor_parity(f"face+body{tag}", got, want, fp16), rgba_parity(f"student{tag}", got_rgba, want_rgba, fp16)]
