"""The fused finest-level kernel (Triton) against the layer-by-layer folded body. Without a GPU
the same kernel runs in Triton's interpreter on the CPU (with bigger blocks: the interpreter
pays per program), so its arithmetic is checked here; its speed only on a GPU."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernel is defined, at import
pytest.importorskip("triton")

from tha.export.folded import FoldedBody, fp16_gemms  # noqa: E402
from tha.export.verify import random_poses  # noqa: E402
from tha.models.character import load_character_model  # noqa: E402
from tha.models.image import rgba8  # noqa: E402
from tha.runtime.backends.fused_finest import FusedFinest  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK = 64 if DEVICE == "cuda" else 1024


def _premultiplied_psnr(got: torch.Tensor, want: torch.Tensor) -> float:
    """PSNR of two (4,H,W) images as shown: RGBA8 with colour times alpha."""
    def shown(image: torch.Tensor) -> np.ndarray:
        rgba = rgba8(image.double().cpu()).numpy().astype(np.float64)
        return np.concatenate([rgba[..., :3] * rgba[..., 3:] / 255.0, rgba[..., 3:]], axis=-1)

    mse = np.mean((shown(got) - shown(want)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def bodies(lambda00_dir):
    model = load_character_model(lambda00_dir)
    exact = FoldedBody(model.body_morpher).eval().to(DEVICE)
    half = fp16_gemms(FoldedBody(model.body_morpher).eval().to(DEVICE))
    return exact, half, FusedFinest(half, DEVICE, block=BLOCK), model.image_tensor()[None].to(DEVICE)


def test_fused_finest_matches_the_folded_body(bodies):
    """fp16 GEMMs either way; the fused kernel keeps GEMM results in fp32, so it is as close to
    fp32 as the layer-by-layer fp16 body (measured here: mean abs 3.2e-4 vs 3.7e-4 over the fields)."""
    exact, half, fused, image = bodies
    pose = torch.from_numpy(random_poses(1, seed=11)[0])[None].to(DEVICE)
    with torch.no_grad():
        want, layered = exact.fields(pose), half.fields(pose)
        got = fused(half.coarse_features(pose), pose)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert (got - want).abs().mean() <= 1.1 * (layered - want).abs().mean()
        shown = exact.compose(image, got)[0]
        assert _premultiplied_psnr(shown, exact.compose(image, want)[0]) >= 45.0


def test_fused_finest_batch_equals_single_frames(bodies):
    """One launch for N frames gives each frame's fields. Not bit for bit: the coarse feature GEMM
    is batched too, and an fp16 GEMM may round a few values of a batch one step differently
    (here: 309 of 1.8M fields, by at most 6.3e-4)."""
    _, half, fused, _ = bodies
    poses = torch.from_numpy(random_poses(2, seed=3)).to(DEVICE)
    with torch.no_grad():
        features = torch.stack([half.coarse_features(p[None]) for p in poses])
        batch = fused(features, poses)
        for i, pose in enumerate(poses):
            single = fused(features[i], pose[None])
            diff = (batch[i:i + 1] - single).abs()
            assert diff.max() <= 5e-3 and diff.mean() <= 1e-6
