"""The fused kernels (Triton) against the layer-by-layer folded student. Without a GPU they run
in Triton's CPU interpreter (conftest sets it up; bigger blocks there, as it pays per program),
so their arithmetic is checked here; their speed only on a GPU."""
from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("tha.runtime.backends.fused_levels", exc_type=ImportError)

from tha.export.folded import FoldedBody, FoldedFace, fp16_gemms  # noqa: E402
from tha.export.verify import random_poses  # noqa: E402
from tha.models.character import load_character_model  # noqa: E402
from tha.models.image import rgba8  # noqa: E402
from tha.runtime.backends.fused_levels import FusedBody, face_patches  # noqa: E402

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


@pytest.mark.slow  # Triton's interpreter runs the kernels in Python
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
        got = face_patches(half, DEVICE)(pose)
        for i in range(2):
            want, layered = exact(pose[i:i + 1]), half(pose[i:i + 1])
            assert got[i:i + 1].shape == want.shape
            assert (got[i:i + 1] - want).abs().mean() <= 1.1 * (layered - want).abs().mean()


@pytest.mark.slow  # Triton's interpreter runs the kernels in Python
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


class SmallSharedMemory:
    """``_level_kernel`` as a GPU with less shared memory per SM than an H100 launches it: Triton
    refuses, at the first launch, a kernel whose padded width is over ``widest`` (the numbers are
    a GeForce RTX 4090's 99 KB a block against the 256-wide level's 128 KB of weights)."""

    def __init__(self, kernel, widest: int):
        self.kernel, self.widest = kernel, widest

    def __getitem__(self, grid):
        def launch(*args, **meta):
            if meta["CP"] > self.widest:
                from triton.runtime import OutOfResources

                raise OutOfResources(139264, 101376, "shared memory")
            return self.kernel[grid](*args, **meta)

        return launch


@pytest.mark.slow  # Triton's interpreter runs the kernels in Python
def test_levels_too_big_for_the_gpu_run_layer_by_layer(bodies, monkeypatch):
    """A consumer GPU: the 256-wide level stays layer by layer (with a warning saying why), the
    512x512 one still fuses, and the fields are as close to fp32 as before."""
    fused_levels = sys.modules[FusedBody.__module__]  # the module FusedBody reads its kernel from

    exact, half, _ = bodies
    monkeypatch.setattr(fused_levels, "_level_kernel", SmallSharedMemory(fused_levels._level_kernel, widest=128))
    with pytest.warns(UserWarning, match=r"a 256-channel 256x256 level needs 139264 of shared memory, this GPU "
                                         r"has 101376: it runs layer by layer"):
        fused = FusedBody(half, DEVICE)
    assert fused.lead == 2 and [level.cp for level in fused.levels] == [128]
    pose = torch.from_numpy(random_poses(1, seed=11)[0])[None].to(DEVICE)
    with torch.no_grad():
        want, layered, got = exact.fields(pose), half.fields(pose), fused.fields(pose)
    assert (got - want).abs().mean() <= 1.1 * (layered - want).abs().mean()


def test_a_gpu_that_fits_no_fused_level_is_one_line(model, monkeypatch):
    """Nothing fits: the face runs layer by layer, and the body, with nothing left to fuse, refuses
    in one line naming --backend cuda."""
    from tha.models.errors import ThaError
    fused_levels = sys.modules[FusedBody.__module__]  # the module FusedBody reads its kernel from

    face = fp16_gemms(FoldedFace(model.face_morpher).eval().to(DEVICE))
    body = fp16_gemms(FoldedBody(model.body_morpher).eval().to(DEVICE))
    monkeypatch.setattr(fused_levels, "_level_kernel", SmallSharedMemory(fused_levels._level_kernel, widest=64))
    with pytest.warns(UserWarning, match="a 128-channel 128x128 level needs"):
        patches = face_patches(face, DEVICE)
    pose = torch.from_numpy(random_poses(1, seed=4)[:, :39]).to(DEVICE)
    with torch.no_grad():
        assert torch.equal(patches(pose), face(pose))
    with pytest.warns(UserWarning, match="a 128-channel 512x512 level needs"):
        with pytest.raises(ThaError, match=r"no level of this body can be fused on this device .*use --backend cuda"):
            FusedBody(body, DEVICE)
