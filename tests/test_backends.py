"""Runtime backends: the fast CPU path and ONNX Runtime against the PyTorch student, the face
cache, `auto` selection and `tha doctor`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tha.export.verify import MAX_ABS, random_poses
from tha.models.errors import ThaError
from tha.runtime.backends.base import FaceCache
from tha.runtime.backends.cpu_ops import upsample2x
from tha.runtime.backends.fastcpu import FastCPUBackend
from tha.runtime.renderer import BACKENDS, PREFERENCE, choose_backend, open_backend
from cli import assert_one_line_error, tha
from upstream import assert_matches_upstream

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


@pytest.fixture(scope="module")
def fast(lambda00) -> FastCPUBackend:
    return FastCPUBackend(lambda00)


def test_fastcpu_matches_upstream_reference(fast, student_reference):
    poses = student_reference["poses"].astype(np.float32)
    got = torch.cat([fast.render_tensor(p) for p in poses])
    assert_matches_upstream(got, student_reference["blended_image"], "fastcpu")
    with fast.engine.scope():
        patch = fast.engine.face(torch.from_numpy(poses[-1:, :39]))
    assert (patch - torch.from_numpy(student_reference["face_morpher_output"][-1:])).abs().max() < 1e-3


def test_upsample2x_is_bilinear_interpolate():
    x = torch.randn(5, 16, 16, generator=torch.Generator().manual_seed(0))  # a fixed input: the bound is not a draw
    out = upsample2x(x, torch.empty(5, 16, 32), torch.empty(5, 32, 32))
    want = torch.nn.functional.interpolate(x[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
    assert (out - want).abs().max() < 1e-6
    for k0, k1 in [(0, 3), (3, 9), (9, 16), (0, 16)]:  # a band of rows: the same numbers, exactly
        band = upsample2x(x, torch.empty(5, 2 * (k1 - k0), 16), torch.empty(5, 2 * (k1 - k0), 32), k0, k1)
        assert torch.equal(band, out[:, 2 * k0: 2 * k1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lambda_00", "lambda_01"])
def test_fastcpu_skips_still_tiles_within_the_fp32_bounds(name, request):
    """The finest level on the tiles that can change only: the same frames as the whole grid
    (random poses, and head and body turned to their limits, which sweep the widest area),
    with well under the whole grid evaluated."""
    from tha.train.extremes import extreme_poses
    from tha.export.verify import rgba_parity

    from tha.models.character import load_character_model

    model = load_character_model(request.getfixturevalue(name.replace("_", "") + "_dir"))
    sparse, whole = FastCPUBackend(model), FastCPUBackend(model, active_tiles=False)
    turned = [pose for label, pose in extreme_poses().items() if label.startswith("head and body turned")]
    fractions = []
    for pose in [*random_poses(4, seed=21), *turned]:
        got, want = sparse.render_tensor(pose), whole.render_tensor(pose)
        fractions.append(sparse.engine.fast_body.finest.active_fraction)
        assert (got - want).abs().max() <= MAX_ABS
        parity = rgba_parity(name, sparse.render(pose).host(), whole.render(pose).host(), fp16=False)
        assert parity.ok and parity.max_abs <= 1, parity.line()
    assert max(fractions) < 0.7, fractions  # measured 0.40-0.54 on both characters


def test_active_tile_runs_and_window_upsampling():
    from tha.runtime.backends.active_tiles import TILE, segments_of, upsample_window

    active = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    runs = [(s.y, s.x, s.width, s.offset) for s in segments_of(active)]
    t = TILE
    assert runs == [(0, t, 2 * t, 0), (0, 4 * t, t, 2 * t * t), (2 * t, 0, 5 * t, 3 * t * t)]
    x = torch.randn(3, 16, 16)
    full = upsample2x(x, torch.empty(3, 16, 32), torch.empty(3, 32, 32))
    padded = torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]
    window = padded[:, 3:3 + 6, 5:5 + 10]  # coarse rows 2..8, columns 4..12 with their neighbours
    out = upsample_window(window, torch.empty(3, 8, 16), torch.empty(3, 8, 10))
    assert torch.equal(out, full[:, 6:14, 10:26])
    edge = upsample_window(padded[:, 0:6, 0:10], torch.empty(3, 8, 16), torch.empty(3, 8, 10))
    assert torch.equal(edge, full[:, 0:8, 0:16])  # the clamped image edge, exactly


def test_face_cache_reuses_the_patch_only_while_face_pose_is_unchanged(lambda00):
    backend = FastCPUBackend(lambda00)
    pose = random_poses(1, seed=3)[0]
    head_moved = pose.copy()
    head_moved[39:45] = -head_moved[39:45]
    backend.render(pose)
    moved = backend.render(head_moved).host()
    assert (backend.face_cache.hits, backend.face_cache.misses) == (1, 1)
    fresh = FastCPUBackend(lambda00).render(head_moved).host()
    assert np.array_equal(moved, fresh)  # the cached patch is the right one
    mouth = head_moved.copy()
    mouth[26] = 1.0 - mouth[26]
    changed = backend.render(mouth).host()
    assert backend.face_cache.misses == 2 and not np.array_equal(changed, moved)


def test_face_cache_counts_and_keys_on_the_first_39_values():
    cache, calls = FaceCache(39), []
    pose = np.zeros(45, np.float32)
    compute = lambda p: calls.append(p.copy()) or len(calls)  # noqa: E731
    assert cache.get(pose, compute) == 1
    pose[44] = 0.5
    assert cache.get(pose, compute) == 1
    pose[38] = 0.1
    assert cache.get(pose, compute) == 2
    assert (cache.hits, cache.misses) == (1, 2)


def test_auto_prefers_gpu_backends_then_fastcpu():
    assert choose_backend({"trt": True, "ort-trt": True, "cuda": True, "torch-cuda": True, "fastcpu": True}) == "trt"
    assert choose_backend({"trt": False, "ort-trt": True, "fastcpu": True}) == "ort-trt"
    assert choose_backend({"trt": False, "cuda": True, "torch-cuda": True, "fastcpu": True}) == "cuda"
    assert choose_backend({"trt": False, "torch-cuda": True, "fastcpu": True}) == "torch-cuda"
    assert choose_backend({"fastcpu": True}) == "fastcpu"
    assert choose_backend({}) == "torch"
    assert set(PREFERENCE) <= set(BACKENDS)


def test_auto_probe_is_cheap_and_matches_this_machine():
    """`auto` checks each backend without the whole doctor (no MediaPipe import, no GLFW)."""
    import subprocess
    import sys

    code = ("import sys; from tha.runtime.renderer import probe_available; a = probe_available(); "
            "print(a['cuda'], 'mediapipe' in sys.modules, 'glfw' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out == [str(torch.cuda.is_available()), "False", "False"]


def test_open_backend_auto_says_what_it_picked(lambda00, caplog):
    caplog.set_level("INFO", logger="tha.runtime.renderer")  # the CLI shows INFO; a library logs it
    with open_backend("auto", lambda00) as backend:
        frame = backend.render(np.zeros(45, np.float32))
    picked = caplog.text
    assert "auto picked" in picked
    if not torch.cuda.is_available():
        assert backend.name == "fastcpu" and "fastcpu" in picked
    assert frame.host().shape == (512, 512, 4) and frame.host().dtype == np.uint8


def test_unknown_backend_is_one_clear_error(lambda00):
    with pytest.raises(ThaError, match="unknown backend 'vulkan'; choose one of auto"):
        open_backend("vulkan", lambda00)


def test_fp16_asked_of_an_fp32_backend_is_refused_or_said(lambda00, caplog):
    """--precision fp16 with a backend that only runs fp32: named, refused; with auto on a CPU
    the pick is said to ignore it, rather than fp32 passing for fp16."""
    with pytest.raises(ThaError, match="--backend fastcpu runs fp32 only; --precision fp16 is for --backend cuda"):
        open_backend("fastcpu", lambda00, precision="fp16")
    if not torch.cuda.is_available():
        with open_backend("auto", lambda00, precision="fp16"):
            pass
        assert "fastcpu runs fp32 only: --precision fp16 has no effect" in caplog.text


def test_missing_execution_provider_is_refused_with_a_reason():
    import onnxruntime as ort

    from tha.export.sessions import provider_list

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ThaError, match="no CUDAExecutionProvider"):
        provider_list("cuda")


@pytest.mark.parametrize("backend, needle", [("trt", "needs TensorRT"), ("ort-cuda", "no CUDAExecutionProvider")])
def test_a_backend_this_machine_lacks_is_refused_before_exporting(tmp_path, backend, needle):
    """The ONNX/TensorRT backends export the model into the cache first; one this machine cannot
    run was refused only after that export (seconds of progress bars and a folder written)."""
    import importlib.util

    import onnxruntime as ort

    present = {"trt": importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
               "ort-cuda": "CUDAExecutionProvider" in ort.get_available_providers()}
    if present[backend]:
        pytest.skip(f"this machine can run {backend}")
    home = tmp_path / "home"
    result = tha("view", DEMO, "--backend", backend, "--offscreen", "--frames", "1", env={"THA_HOME": str(home)},
                 timeout=300)
    assert_one_line_error(result, needle)
    assert not (home / "exports").exists() and "exporting" not in result.stderr


def test_doctor_reports_each_capability_with_a_reason():
    import onnxruntime as ort

    from tha.runtime.doctor import capabilities, check_module

    caps = capabilities()
    assert set(caps) == {"cpu", "cuda", "tensorrt", "triton", "cuda-python", "onnxruntime", "onnxruntime-gpu", "opengl",
                         "mediapipe"}
    assert caps["onnxruntime"].ok and "CPUExecutionProvider" in caps["onnxruntime"].detail
    assert caps["onnxruntime-gpu"].ok == ("CUDAExecutionProvider" in ort.get_available_providers())
    assert caps["cuda"].ok == torch.cuda.is_available()
    if not caps["cuda"].ok:  # the reason names what is missing
        assert ("CPU-only build" in caps["cuda"].detail) == (torch.version.cuda is None)
    missing = check_module("tha_no_such_module", "`pip install it`")
    assert not missing.ok and "ModuleNotFoundError" in missing.detail and missing.detail.endswith("`pip install it`")


def test_tha_lets_idle_cpu_threads_sleep_unless_the_user_chose():
    """Spinning OpenMP threads halved fastcpu's speed beside a busy process (runtime.main's
    wait_passively has the figures). The setting works only if made before torch loads, and
    a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept."""
    import subprocess
    import sys

    from cli import THA

    loaded = subprocess.run([sys.executable, "-c", "import sys, tha.runtime.main; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"  # torch is not loaded before main() sets the policy
    plain = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def cpu_line(**env: str) -> str:
        run = subprocess.run([*THA, "doctor"], capture_output=True, text=True, env={**plain, **env}, timeout=300)
        return next(line for line in run.stdout.splitlines() if line.split()[1:2] == ["cpu"])

    assert "wait: PASSIVE" in cpu_line()
    assert "wait: active" in cpu_line(OMP_WAIT_POLICY="active")
    assert "spin count 5000" in cpu_line(GOMP_SPINCOUNT="5000")


def test_a_triton_too_old_for_the_fused_kernels_is_one_line(monkeypatch):
    """Triton 3.0 (torch 2.4's) rejects the fused kernels: doctor says so, and cuda-fused refuses
    in one line before touching a GPU."""
    import sys

    pytest.importorskip("tha.runtime.backends.fused_levels", exc_type=ImportError)  # a Triton new enough
    import triton

    from tha.runtime.backends.cuda import _fused
    from tha.runtime.doctor import check_triton

    import tha.runtime.backends as backends

    monkeypatch.setattr(triton, "__version__", "3.0.0")
    # re-imported below: the package's attribute comes back too, or later tests would patch a copy
    monkeypatch.delattr(backends, "fused_levels", raising=False)
    monkeypatch.delitem(sys.modules, "tha.runtime.backends.fused_levels", raising=False)
    check = check_triton()
    assert not check.ok and "Triton 3.0.0 is older than 3.2" in check.detail and "pip install -U triton" in check.detail
    with pytest.raises(ThaError, match=r"cuda-fused needs Triton 3.2 or newer \(Triton 3.0.0 is older"):
        _fused(None, None, torch.device("cpu"))
    monkeypatch.setattr(triton, "__version__", "3.6.0+git9f8e7d")  # a source build is new enough
    monkeypatch.delitem(sys.modules, "tha.runtime.backends.fused_levels", raising=False)
    assert check_triton().ok
    monkeypatch.undo()  # the real version (and module, if it was loaded) for the tests after this one
    assert check_triton().ok


@pytest.mark.gpu
def test_torch_cuda_frame_stays_on_device(lambda00, student_reference):
    """fp32 without TF32 (scoped in the backend): the CPU float bound holds on the GPU too
    (with TF32 on, the H100 gave max abs error 0.34)."""
    with open_backend("torch", lambda00, device="cuda") as backend:
        pose = student_reference["poses"][0].astype(np.float32)
        frame = backend.render(pose)
        assert frame.on_device
        got = backend.render_tensor(pose).cpu()
    assert_matches_upstream(got, student_reference["blended_image"][:1], "torch on cuda")


def test_one_backend_renders_from_two_threads_at_once(fast):
    """The pasted image, face cache and engine buffers are shared between calls: without the
    lock, 11 of 12 frames came back with the other thread's pose (or a mix)."""
    import threading

    poses = random_poses(2, seed=5)
    poses[1, :39] = 1.0 - poses[1, :39]  # different faces too, so the face cache is exercised
    want = [fast.render(p).host() for p in poses]
    barrier, got = threading.Barrier(2), {0: [], 1: []}

    def worker(i: int) -> None:
        barrier.wait()
        got[i] = [fast.render(poses[i]).host() for _ in range(6)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wrong = sum(not np.array_equal(frame, want[i]) for i in (0, 1) for frame in got[i])
    assert wrong == 0, f"{wrong} of 12 frames wrong"


def test_precise_matmuls_holds_while_any_thread_is_inside():
    """The TF32 flags are the process's: a new student's capture in `tha serve` overlaps the old
    backend's frame on another thread. The first block to leave restored the caller's TF32 under
    the other, still running (the flags are plain attributes: this runs on any CPU)."""
    import threading

    from tha.runtime.backends.cuda_env import precise_matmuls

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn

    def settings():
        return matmul.allow_tf32, cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction

    before = settings()
    entered, leave, seen = threading.Event(), threading.Event(), []

    def capture_on_another_thread() -> None:
        with precise_matmuls():
            entered.set()
            leave.wait(60)
            seen.append(settings())  # what its last kernels ran under

    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = matmul.allow_fp16_reduced_precision_reduction = True
        other = threading.Thread(target=capture_on_another_thread)
        with precise_matmuls():  # a frame on this thread, begun first and done first
            other.start()
            assert entered.wait(60)
        assert settings() == (False, False, False)  # the other block still runs
        leave.set()
        other.join(60)
        assert seen == [(False, False, False)]
        assert settings() == (True, True, True)  # the last to leave brings the caller's back
    finally:
        leave.set()
        matmul.allow_tf32, cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction = before


@pytest.mark.parametrize("pose, needle", [
    (np.zeros(44, np.float32), "a pose has 45 values, got 44"),
    (np.zeros(46, np.float32), "a pose has 45 values, got 46"),
    (np.where(np.arange(45) == 26, np.nan, 0).astype(np.float32), "pose parameter 'mouth_aaa' is nan"),
    (np.where(np.arange(45) == 44, np.inf, 0).astype(np.float32), "pose parameter 'breathing' is inf"),
])
def test_a_bad_pose_is_one_line_error_on_every_pipeline_path(fast, lambda00, pose, needle):
    from tha.runtime.backends.torch import TorchBackend

    for call in (fast.render, fast.render_tensor, TorchBackend(lambda00).render):
        with pytest.raises(ThaError, match=needle) as err:
            call(pose)
        assert "\n" not in str(err.value)


def test_render_batch_names_the_shape_it_takes(fast):
    with pytest.raises(ThaError, match=r"render_batch takes \(N,45\) poses, got shape \(45,\)"):
        fast.render_batch(np.zeros(45, np.float32))
    with pytest.raises(ThaError, match=r"render_batch needs at least one pose, got shape \(0, 45\)"):
        fast.render_batch(np.zeros((0, 45), np.float32))
    frames = fast.render_batch(np.zeros((2, 45), np.float32))
    assert isinstance(frames, torch.Tensor) and frames.shape == (2, 512, 512, 4) and frames.dtype == torch.uint8


def test_frame_types_are_what_the_contract_says(fast):
    """On the CPU a frame is a torch tensor; host() is a NumPy array (the docstring said either)."""
    frame = fast.render(np.zeros(45, np.float32))
    assert isinstance(frame.rgba, torch.Tensor) and not frame.on_device
    assert isinstance(frame.host(), np.ndarray) and frame.host().shape == (512, 512, 4)


def test_the_readme_python_example_runs_as_written():
    """README's "From Python" block, run as a user pastes it (from the repository root)."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```python\n(.*?)```", (root / "README.md").read_text(), re.S)
    assert len(blocks) == 1
    code = blocks[0] + "assert rgba.shape == (512, 512, 4) and rgba.dtype.name == 'uint8' and rgba[..., 3].any()\n"
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_cuda_python_missing_is_one_line_everywhere(monkeypatch):
    """The trt backend, the viewer's interop and `tha doctor` each looked for cuda-python in
    their own words (trt's: an ImportError traceback); one lookup now, one message."""
    import sys

    from tha.runtime.backends.cudart import MODULES, cudart
    from tha.runtime.doctor import check_cuda_python

    for name in MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # `import` of it raises ImportError
    with pytest.raises(ThaError, match=r"cuda-python is not installed: `pip install cuda-python`") as err:
        cudart()
    assert "\n" not in str(err.value)
    check = check_cuda_python()
    assert not check.ok and check.detail == str(err.value)


def _recording_backends(monkeypatch) -> list[tuple[str, str]]:
    """Every registry entry replaced by one that records (name, device) and refuses but torch
    and fastcpu; the probe offers fastcpu, as on this CPU machine."""
    from tha.runtime import renderer

    opened: list[tuple[str, str]] = []

    def factory(name: str):
        def make(model, device, precision=None):
            opened.append((name, device))
            if name not in ("torch", "fastcpu"):
                raise ThaError(f"{name} is not here")
            return FastCPUBackend.__new__(FastCPUBackend)
        return make

    monkeypatch.setattr(renderer, "BACKENDS", {name: factory(name) for name in BACKENDS})
    monkeypatch.setattr(renderer, "probe_available", lambda: {"fastcpu": True})
    return opened


def test_auto_gives_the_backends_the_device_it_was_asked_for(lambda00, monkeypatch):
    """auto passed "cpu" to every backend whatever device it was given; on a CUDA device it now
    passes over the CPU-only backends and runs torch there."""
    from tha.runtime.backends import cuda_env

    opened = _recording_backends(monkeypatch)
    open_backend("auto", lambda00, device="cpu")
    assert opened == [("fastcpu", "cpu")]
    opened.clear()
    monkeypatch.setattr(cuda_env, "require_cuda", lambda what, instead: None)  # as on a CUDA machine
    open_backend("auto", lambda00, device="cuda")
    assert opened == [("torch", "cuda")]
    with pytest.raises(ThaError, match=r"--backend auto runs its GPU backends on the default GPU, not cuda:1; "
                                       r"use --backend torch --device cuda:1"):
        open_backend("auto", lambda00, device="cuda:1")


def test_auto_on_a_cuda_device_without_cuda_says_so(lambda00):
    """It used to fall back to the CPU without a word."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ThaError, match=r"--backend auto --device cuda needs .*, or use --device cpu") as err:
        open_backend("auto", lambda00, device="cuda")
    assert "\n" not in str(err.value)
