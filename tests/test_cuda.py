"""The CUDA backend (folded student as CUDA graphs) and exact fp32 on CUDA: against upstream's
reference arrays, fp16 against fp32, graph replay against eager, a batch against single frames.
Bounds come from runs on an NVIDIA H100 (see each test); without a GPU the refusal, the matmul
settings' scoping and the backend's eager frame path (its modules on the CPU) are checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tha.export.verify import random_poses
from tha.models.character import load_character_model
from tha.models.errors import ThaError
from tha.models.image import rgba8
from tha.runtime.backends.cuda import CudaBackend
from tha.runtime.backends.cuda_env import precise_matmuls
from tha.runtime.renderer import open_backend

from frames import shown_psnr, within_one_level


def _uint8(image: torch.Tensor) -> np.ndarray:
    return rgba8(image.detach().to("cpu", torch.float64)).numpy().astype(np.int16)


def test_precise_matmuls_is_scoped_and_restores_the_callers_settings():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn

    def settings():
        return matmul.allow_tf32, cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction

    before = settings()
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = matmul.allow_fp16_reduced_precision_reduction = True
        with precise_matmuls():
            assert settings() == (False, False, False)
        assert settings() == (True, True, True)
        with pytest.raises(RuntimeError), precise_matmuls():
            raise RuntimeError("restored on errors too")
        assert settings() == (True, True, True)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction = before


def test_cuda_backend_without_a_gpu_is_one_clear_error(lambda00):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for name in ("cuda", "cuda-fused"):
        with pytest.raises(ThaError, match=rf"--backend {name} needs .*--backend fastcpu"):
            open_backend(name, lambda00)


def test_unknown_precision_is_refused(lambda00):
    with pytest.raises(ThaError, match="unknown precision 'fp8'; choose fp16 or fp32"):
        open_backend("torch", lambda00, precision="fp8")


def _on_cpu(model, precision: str, fused: bool = False) -> CudaBackend:
    """The CUDA backend's modules and buffers on the CPU, without graphs: what they replay."""
    backend = CudaBackend.__new__(CudaBackend)
    backend._setup(model, precision, torch.device("cpu"), fused)
    return backend


def test_cuda_backend_checks_poses_before_the_device_sees_them(lambda00):
    """The pipeline backends' one-line pose errors hold for the CUDA backend too (its graphs
    would copy a wrong-size pose into a static buffer)."""
    backend = _on_cpu(lambda00, "fp32")
    with pytest.raises(ThaError, match="a pose has 45 values, got 44"):
        backend.render_eager(np.zeros(44, np.float32))
    with pytest.raises(ThaError, match=r"render_batch takes \(N,45\) poses, got shape \(45,\)"):
        backend.render_batch(np.zeros(45, np.float32))


def test_cuda_backend_is_not_taken_for_one_that_blends(lambda00):
    """It had an attribute `fields` (a per-batch callable), so `tha bench` timed blended frames
    on it and died giving that callable a NumPy pose."""
    from tha.runtime.interpolate import can_interpolate

    assert not can_interpolate(_on_cpu(lambda00, "fp32"))


def _eager_frames(backend: CudaBackend, poses: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Each pose alone through ``_frame`` (face included), then all of them through ``_batch_run``."""
    batch = torch.zeros(len(poses), 512, 512, 4, dtype=torch.uint8)
    with backend._scope():
        backend._batch_run(torch.from_numpy(poses), batch)
    return [_eager_frame(backend, pose) for pose in poses], batch.numpy()


def _eager_frame(backend: CudaBackend, pose: np.ndarray) -> np.ndarray:
    """One pose through ``_frame``, face included."""
    with backend._scope():
        backend.pose.copy_(torch.from_numpy(pose)[None])
        backend._frame(face=True)
    return backend.rgba.numpy().copy()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fp32", "fp16", "fused"])
def test_cuda_frame_path_on_cpu(kind, lambda00):
    """The eager frame path the graphs capture (face, paste, body, RGBA8; single and batch), run
    on the CPU: fp32 meets the CPU bound against the torch backend; fp16 and the fused kernels
    (Triton's interpreter) meet the fp16 bound against fp32, in single frames and in a batch."""
    if kind == "fused":
        pytest.importorskip("tha.runtime.backends.fused_levels", exc_type=ImportError)
        if torch.cuda.is_available():  # compiled kernels take CUDA tensors only; the gpu tests cover it there
            pytest.skip("Triton runs compiled, not interpreted, on a CUDA machine")
    poses = random_poses(2, seed=21)
    exact = _on_cpu(lambda00, "fp32")
    want, want_batch = _eager_frames(exact, poses)
    if kind == "fp32":
        with open_backend("torch", lambda00) as reference:
            for pose, single, batched in zip(poses, want, want_batch):
                assert within_one_level(single, reference.render(pose).host()) >= 0.999
                assert within_one_level(batched, single) >= 0.999
        return
    got, got_batch = _eager_frames(_on_cpu(lambda00, "fp16", fused=kind == "fused"), poses)
    for single, batched, truth in zip(got, got_batch, want):
        assert shown_psnr(single, truth) >= FP16_PSNR_DB
        assert shown_psnr(batched, truth) >= FP16_PSNR_DB


@pytest.fixture(scope="module")
def cuda32(lambda00):
    with open_backend("cuda", lambda00, precision="fp32") as backend:
        yield backend


@pytest.fixture(scope="module")
def cuda16(lambda00):
    with open_backend("cuda", lambda00, precision="fp16") as backend:
        yield backend


@pytest.fixture(scope="module")
def cudafused(lambda00):
    pytest.importorskip("tha.runtime.backends.fused_levels", exc_type=ImportError)
    with open_backend("cuda-fused", lambda00) as backend:
        yield backend


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cuda", "torch-cuda"])
def test_fp32_on_cuda_meets_the_cpu_bound_against_upstream(name, lambda00, student_reference):
    """Measured on the H100: with TF32 (PyTorch's cuDNN default) 1.95% of alpha>0 pixels were
    more than one level off; without it none, so the CPU bound (>= 99.9% within +-1) applies."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with open_backend(name, lambda00, precision="fp32") as backend:
        for pose, want in zip(student_reference["poses"].astype(np.float32), student_reference["blended_image"]):
            frame = backend.render(pose)
            assert frame.on_device
            got = backend.render_tensor(pose)[0]
            assert within_one_level(_uint8(got), _uint8(torch.from_numpy(want))) >= 0.999
            assert within_one_level(frame.host(), _uint8(torch.from_numpy(want))) >= 0.999
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == tf32  # untouched


# fp16 frames against fp32 frames, as shown (premultiplied RGBA8): the 45 dB. Straight-
# alpha PSNR is not the measure: ~85% of its squared error sits in the 0.6% of pixels with alpha
# below 32/255, whose colour is divided by that alpha and barely shows. Measured on the CPU (the
# same fp16-GEMM modules, next test; 16 random poses): lambda_00 49.6-50.6 dB premultiplied
# (42.0-45.2 straight), lambda_01 47.1-52.3 (37.9-43.6). The earlier all-fp16 path scored 40.97
# straight at worst on an H100; this policy has not run on a GPU yet.
FP16_PSNR_DB = 45.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lambda_00", "lambda_01"])
def test_fp16_gemms_against_fp32_on_cpu(name, request):
    """The CUDA backend's fp16 modules run on the CPU: PyTorch's CPU fp16 GEMM takes fp16
    inputs, sums in fp32 and rounds the result to fp16, as cuBLAS does with precise_matmuls;
    everything else is fp32 on both. So the precision policy is checked here, without a GPU."""
    model = load_character_model(request.getfixturevalue(name.replace("_", "") + "_dir"))
    exact, half = _on_cpu(model, "fp32"), _on_cpu(model, "fp16")
    assert half.body.last.weight.dtype == torch.float16 and half.body.firsts[0].column.dtype == torch.float32
    for pose in random_poses(3, seed=11):
        assert shown_psnr(_eager_frame(half, pose), _eager_frame(exact, pose)) >= FP16_PSNR_DB


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True])
def test_fp16_psnr_against_fp32(fused, request, cuda32):
    half = request.getfixturevalue("cudafused" if fused else "cuda16")
    for pose in random_poses(4, seed=11):
        got, want = half.render(pose).host(), cuda32.render(pose).host()
        assert shown_psnr(got, want) >= FP16_PSNR_DB


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cuda16", "cuda32", "cudafused"])
def test_graph_replay_equals_eager(name, request):
    """The graph replays the very kernels the eager call launches: the frames are identical,
    on a face-cache miss (face graph) and a hit (body-only graph)."""
    backend = request.getfixturevalue(name)
    pose, other = random_poses(2, seed=5)
    head = pose.copy()
    head[39:] = -head[39:]
    replayed = backend.render(pose).host()  # miss: the full graph
    backend.render_eager(other)
    assert np.array_equal(backend.render_eager(pose).host(), replayed)  # miss: eager face + body
    hits = backend.face_cache.hits
    replayed = backend.render(head).host()  # hit: the body-only graph
    assert np.array_equal(backend.render_eager(head).host(), replayed)
    assert backend.face_cache.hits == hits + 2


@pytest.mark.gpu
def test_face_cache_hit_gives_the_fresh_frame(cuda32, lambda00):
    pose = random_poses(1, seed=8)[0]
    head = pose.copy()
    head[39:] = -head[39:]
    cuda32.render(pose)
    hits = cuda32.face_cache.hits
    cached = cuda32.render(head).host()
    assert cuda32.face_cache.hits == hits + 1
    with open_backend("cuda", lambda00, precision="fp32") as fresh:
        assert np.array_equal(fresh.render(head).host(), cached)


@pytest.mark.gpu
def test_batch_equals_single_frames(cuda16, cuda32, cudafused):
    """N poses in one graph (vmap: batched GEMMs) against one by one. In fp32 the CPU bound holds
    (+-1 level on >= 99.9% of alpha>0 pixels, passed on the H100). In fp16 a batched GEMM rounds
    differently (H100: only 89% within +-1 of the fp16 single frame), so an fp16 batch is held to
    what fp16 promises: the same PSNR against the fp32 frame as a single fp16 frame."""
    poses = random_poses(5, seed=13)
    batch32, batch16, fused = (b.render_batch(poses) for b in (cuda32, cuda16, cudafused))
    assert batch16.is_cuda and tuple(batch16.shape) == (5, 512, 512, 4) and batch16.dtype == torch.uint8
    for pose, got32, got16, got_fused in zip(poses, *(b.cpu().numpy() for b in (batch32, batch16, fused))):
        single = cuda32.render(pose).host()
        assert within_one_level(got32, single) >= 0.999
        assert shown_psnr(got16, single) >= FP16_PSNR_DB
        assert shown_psnr(got_fused, single) >= FP16_PSNR_DB
