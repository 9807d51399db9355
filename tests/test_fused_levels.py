"""The fused kernels (Triton) against the layer-by-layer folded student. Without a GPU they run
in Triton's CPU interpreter (conftest sets it up; bigger blocks there, as it pays per program),
so their arithmetic is checked here; their speed only on a GPU."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("tha.runtime.backends.fused_levels", exc_type=ImportError)

from tha.export.folded import FoldedBody, FoldedFace, fp16_gemms  # noqa: E402
from tha.export.verify import random_poses  # noqa: E402
from tha.models.character import load_character_model  # noqa: E402
from tha.models.image import rgba8  # noqa: E402
from tha.runtime.backends.fused_levels import FusedBody, fused_face  # noqa: E402

from frames import shown_psnr  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def frame_psnr(got: torch.Tensor, want: torch.Tensor) -> float:
    """Two (4,H,W) network images compared as shown (RGBA8, premultiplied)."""
    return shown_psnr(*(rgba8(image.double().cpu()).numpy() for image in (got, want)))


@pytest.fixture(scope="module")
def model(lambda00_dir):
    return load_character_model(lambda00_dir)


@pytest.fixture(scope="module")
def bodies(model):
    exact = FoldedBody(model.body_morpher).eval().to(DEVICE)
    half = fp16_gemms(FoldedBody(model.body_morpher).eval().to(DEVICE))
    return exact, half, FusedBody(half, DEVICE)


def test_fused_body_matches_the_folded_body(bodies, model):
    """The 256x256 and 512x512 levels fused (the 360-channel one stays layer by layer); fp16
    GEMMs either way, but the kernels keep GEMM results in fp32, so the fields are at least as
    close to fp32 as the layer-by-layer fp16 body's."""
    exact, half, fused = bodies
    assert fused.lead == 1 and len(fused.levels) == 2 and [level.cp for level in fused.levels] == [256, 128]
    image = model.image_tensor()[None].to(DEVICE)
    pose = torch.from_numpy(random_poses(1, seed=11)[0])[None].to(DEVICE)
    with torch.no_grad():
        want, layered, got = exact.fields(pose), half.fields(pose), fused.fields(pose)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert (got - want).abs().mean() <= 1.1 * (layered - want).abs().mean()
        assert frame_psnr(exact.compose(image, got)[0], exact.compose(image, want)[0]) >= 45.0


def test_fused_face_matches_the_folded_face(model):
    exact = FoldedFace(model.face_morpher).eval().to(DEVICE)
    half = fp16_gemms(FoldedFace(model.face_morpher).eval().to(DEVICE))
    pose = torch.from_numpy(random_poses(2, seed=4)[:, :39]).to(DEVICE)
    with torch.no_grad():
        got = fused_face(half, DEVICE)(None, pose)
        for i in range(2):
            want, layered = exact(pose[i:i + 1]), half(pose[i:i + 1])
            assert got[i:i + 1].shape == want.shape
            assert (got[i:i + 1] - want).abs().mean() <= 1.1 * (layered - want).abs().mean()


def test_fused_body_batch_is_as_close_as_single_frames(bodies):
    """One launch per level for N frames. Not equal to single frames bit for bit: the leading
    level runs batched GEMMs then, which round fp16 differently, and the sine layers carry such
    differences on (up to 0.03 in a field here); each frame is as close to fp32 as ever."""
    exact, half, fused = bodies
    poses = torch.from_numpy(random_poses(2, seed=3)).to(DEVICE)
    with torch.no_grad():
        batch = fused.fields(poses)
        for i in range(2):
            want = exact.fields(poses[i:i + 1])
            assert (batch[i:i + 1] - want).abs().mean() <= 1.1 * (half.fields(poses[i:i + 1]) - want).abs().mean()
