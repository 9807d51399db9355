"""`tha distill`: config and input errors through the CLI, `init`, exact resume after a real
SIGKILL, two-process DDP, re-distilling lambda_00, and a rig-teacher run that converges."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tha.models.character import load_character_model
from tha.models.errors import ThaError
from tha.models.image import load_image_tensor
from tha.models.poser import StudentPoser
from tha.models.pose import index_of
from tha.models.rig_teacher import RigTeacher
from tha.train.config import load_config
from tha.train.distill import distill
from tha.train.poses import PoseSampler
from tha.train.samples import psnr
from tha.train.snapshot import load_snapshot
from cli import THA, assert_one_line_error

def _images(shared: Path) -> tuple[Path, Path]:
    return shared / "tha4-data/images/lambda_00.png", shared / "tha4-data/images/lambda_00_face_mask.png"


def _tiny(shared: Path, prefix: Path, **extra) -> dict:
    """A seconds-long run: small students trained at low resolution, short schedules."""
    image, mask = _images(shared)
    config = {
        "prefix": str(prefix), "character_image_file_name": str(image), "face_mask_image_file_name": str(mask),
        "face_morpher_random_seed_0": 12771885812175595441, "face_morpher_random_seed_1": 14367217090963479175,
        "body_morpher_random_seed_0": 2892221210020292507, "body_morpher_random_seed_1": 9998918537095922080,
        "face_morpher_batch_size": 4, "body_morpher_batch_size": 4,
        "face_morpher_num_training_examples_per_sample_output": 48,
        "body_morpher_num_training_examples_per_sample_output": 48,
        "teacher": "rig", "device": "cpu", "snapshot_every": 16, "num_sample_poses": 2,
        "face_student": {"channels": 16, "num_sine_layers": 2},
        "body_student": {"level_channels": [16, 8], "sine_layers_per_level": 2},
        "face": {"num_examples": 48, "learning_rate": 1e-3, "lr_drop_at": [32], "lr_drop_factor": [3.0],
                 "resolution": 16},
        "body": {"resolution": 32, "phases": [
            {"end": 24, "learning_rate": 1e-3, "blended": 1, "warped": 1, "grid_change": 5, "color_change": 1},
            {"end": 48, "learning_rate": 3e-4, "blended": 10, "warped": 1, "grid_change": 1, "color_change": 1}]},
    }
    config.update(extra)
    return config


def _one_body_step(shared: Path, prefix: Path, teacher: Path, face_examples: int, face_batch: int) -> dict:
    """For teachers that are slow on a CPU: a short face stage at 32 px, then one body step."""
    return _tiny(shared, prefix, teacher=str(teacher), face_morpher_batch_size=face_batch,
                 body_morpher_batch_size=1, snapshot_every=1000, num_sample_poses=1,
                 face={"num_examples": face_examples, "learning_rate": 1e-3, "lr_drop_at": [], "lr_drop_factor": [],
                       "resolution": 32},
                 body={"resolution": 32, "phases": [{"end": 1, "learning_rate": 1e-3, "blended": 1, "warped": 1,
                                                    "grid_change": 1, "color_change": 1}]})


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*THA, *args], capture_output=True, text=True, timeout=timeout)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_config_and_input_errors_are_one_clear_line(shared, tmp_path):
    image, mask = _images(shared)
    rgba = np.asarray(Image.open(image))
    Image.fromarray(rgba).resize((256, 256)).save(tmp_path / "small.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    grey = np.asarray(Image.open(mask).convert("RGB")).copy()
    grey[150, 250] = 128
    Image.fromarray(grey).save(tmp_path / "grey_mask.png")

    def run(name: str, **changes) -> str:
        return _one_error_line(_cli("distill", "run", str(_write(tmp_path / f"{name}.yaml", _tiny(shared, tmp_path / name, **changes)))))

    assert "does not exist" in _one_error_line(_cli("distill", "run", str(tmp_path / "nope.yaml")))
    assert "does not exist" in run("missing", character_image_file_name=str(tmp_path / "gone.png"))
    assert "256x256" in run("size", character_image_file_name=str(tmp_path / "small.png"))
    assert "no alpha" in run("alpha", character_image_file_name=str(tmp_path / "rgb.png"))
    # data-parallel: checked before any worker starts, so still one line
    assert "no alpha" in _one_error_line(_cli("distill", "run", str(tmp_path / "alpha.yaml"), "--nproc", "2"))
    assert "0 and 255 (1 pixel, first at x=250, y=150, value (128, 128, 128))" in run(
        "mask", face_mask_image_file_name=str(tmp_path / "grey_mask.png"))
    assert "unsigned 64-bit" in run("seed", body_morpher_random_seed_1=2**64)
    assert "unsigned 64-bit" in run("negative", face_morpher_random_seed_0=-1)
    assert "unknown key" in run("key", face_morpher_batch_sise=8)
    face = _tiny(shared, tmp_path)["face"]
    assert "pixels_per_example" in run("pixels", face={**face, "pixels_per_example": 16 * 16 + 1})
    # Nothing was trained or written for any of them.
    assert not list(tmp_path.glob("*/snapshot.pt"))


def test_upstream_example_configs_load_as_they_are(shared):
    for path in sorted((shared / "tha4-data/distill_examples").glob("*/config.yaml")):
        config = load_config(path, ["teacher=rig"])
        assert config.face_morpher_random_seed_0 == 12771885812175595441
        assert config.face.num_examples == 1_000_000 and config.body.num_examples == 1_500_000
        assert [p.learning_rate for p in config.body.phases] == [1e-4, 3e-5, 3e-5, 1e-5, 1e-5, 3e-6]


def test_init_checks_inputs_and_writes_preview_and_config(shared, tmp_path):
    image, mask = _images(shared)
    out = tmp_path / "run"
    result = _cli("distill", "init", str(image), str(mask), "-o", str(out))
    assert result.returncode == 0, result.stderr
    preview = np.asarray(Image.open(out / "preview.png"))
    assert preview.shape == (512, 512, 4)
    assert tuple(preview[80, 250, :3]) == (255, 0, 0) and tuple(preview[150, 192, :3]) == (255, 0, 0)
    text = (out / "config.yaml").read_text()
    assert "# " in text
    config = load_config(out / "config.yaml")
    assert config.character_image_file_name == str(image.resolve()) and config.teacher == "rig"
    assert 0 <= config.body_morpher_random_seed_1 < 2**64
    assert "already exists" in _one_error_line(_cli("distill", "init", str(image), str(mask), "-o", str(out)))
    assert "alpha" in _one_error_line(_cli("distill", "init", str(mask), str(mask), "-o", str(tmp_path / "x")))


def test_killed_run_resumes_to_the_same_result(shared, tmp_path):
    config = _tiny(shared, tmp_path / "killed")
    path = _write(tmp_path / "killed.yaml", config)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([*THA, "distill", "run", str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    snapshot = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (tmp_path / "killed/snapshot.pt").is_file():
            snapshot = load_snapshot(tmp_path / "killed")
            if snapshot["stage"] == "body" or snapshot["examples"] >= 16:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot is not None, "the run was not killed mid-way"
    killed_at = load_snapshot(tmp_path / "killed")
    assert not (killed_at["stage"] == "body" and killed_at["examples"] >= 48), "the run finished before the kill"
    # Without --resume the existing run is protected; with it, the run completes.
    result = _cli("distill", "run", str(path))
    assert "--resume" in _one_error_line(result)
    torch.manual_seed(0)  # resuming must not depend on the caller's RNG
    resumed = distill(load_config(path), resume=True)

    straight = distill(load_config(_write(tmp_path / "straight.yaml", _tiny(shared, tmp_path / "straight"))))
    a, b = load_snapshot(tmp_path / "killed"), load_snapshot(tmp_path / "straight")
    for stage in ("face", "body"):
        steps_a, steps_b = np.array(a["history"][stage]), np.array(b["history"][stage])
        assert steps_a.shape == steps_b.shape == (12, 2)
        np.testing.assert_allclose(steps_a, steps_b, rtol=1e-5, atol=1e-7)
    ma, mb = load_character_model(resumed), load_character_model(straight)
    for key, value in mb.body_morpher.state_dict().items():
        torch.testing.assert_close(ma.body_morpher.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    # Samples and TensorBoard scalars came with it.
    grid = np.asarray(Image.open(tmp_path / "straight/samples/body_000000048.png"))
    assert grid.shape == (2 * 512, 3 * 512, 4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "straight/tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"face/loss", "face/masked_l1", "body/loss", "body/blended", "body/grid_change",
            "body/psnr_held_out", "body/examples_per_s"} <= scalars
    # the loss and its terms, read back together each step: the loss is the terms weighted
    # (the face's default mask_weight, 20)
    loss, l1, masked = (events.Scalars(f"face/{name}")[-1] for name in ("loss", "l1", "masked_l1"))
    assert loss.step == l1.step == masked.step == 48
    assert loss.value == pytest.approx(l1.value + 20 * masked.value, rel=1e-5) and masked.value > 0


def _workers_failure(result: subprocess.CompletedProcess) -> str:
    """What a failed torchrun launch says: the workers' own error lines, then its summary."""
    lines = result.stderr.splitlines()
    causes = [line for line in lines if re.search(r"error|terminate|what\(\)|exception|abort", line, re.I)]
    return "\n".join(causes[:20]) + "\n...\n" + result.stderr[-1500:]


def _ddp_config(shared: Path, prefix: Path) -> Path:
    # with the example buffer: 4 examples rendered per rank per fill, each trained on twice
    return _write(prefix.with_suffix(".yaml"), _tiny(shared, prefix, face_morpher_batch_size=2, body_morpher_batch_size=2,
                                                     teacher_batch_size=4, reuse=2))


def _ddp_workers(launcher_pid: int) -> list[int]:
    """PIDs of the tha.train.ddp workers that torchrun (a child of the launcher) started."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(stat.parent.name)] = (int(fields[1]), cmdline)
    torchrun = [pid for pid, (ppid, cmd) in parents.items() if ppid == launcher_pid and b"torch.distributed.run" in cmd]
    return [pid for pid, (ppid, cmd) in parents.items() if torchrun and ppid == torchrun[0] and b"tha.train.ddp" in cmd]


def test_two_gloo_processes_write_one_consistent_snapshot(shared, tmp_path):
    result = _cli("distill", "run", str(_ddp_config(shared, tmp_path / "ddp")), "--nproc", "2", timeout=400)
    assert result.returncode == 0, _workers_failure(result)
    snapshot = load_snapshot(tmp_path / "ddp")
    assert snapshot["stage"] == "body" and snapshot["examples"] == 48
    # Each step consumed 2 ranks x 2 examples, and the losses are the ranks' mean.
    examples = np.array(snapshot["history"]["face"])[:, 0]
    np.testing.assert_array_equal(examples, np.arange(4, 52, 4))
    assert np.isfinite(np.array(snapshot["history"]["body"])[:, 1]).all()
    model = load_character_model(tmp_path / "ddp/character_model")
    for key, value in model.body_morpher.state_dict().items():
        torch.testing.assert_close(snapshot["body_morpher"][key], value)

    # A worker killed mid-run: torchrun restarts both, they resume from the last snapshot, and
    # the run ends exactly as the uninterrupted one did.
    path = _ddp_config(shared, tmp_path / "killed")
    launcher = subprocess.Popen([*THA, "distill", "run", str(path), "--nproc", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "killed/snapshot.pt").exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = _ddp_workers(launcher.pid)
    assert len(workers) == 2, "the run ended before a worker could be killed"
    os.kill(workers[1], signal.SIGKILL)
    out, err = launcher.communicate(timeout=400)
    killed_at = load_snapshot(tmp_path / "killed")
    assert launcher.returncode == 0, _workers_failure(subprocess.CompletedProcess(launcher.args, launcher.returncode, out, err))
    assert "exitcode: -9" in err, err[-2000:]  # torchrun saw the kill, and the run still ended well
    for stage in ("face", "body"):
        np.testing.assert_allclose(np.array(killed_at["history"][stage]), np.array(snapshot["history"][stage]),
                                   rtol=1e-5, atol=1e-7)
    restarted = load_character_model(tmp_path / "killed/character_model")
    for key, value in model.body_morpher.state_dict().items():
        torch.testing.assert_close(restarted.body_morpher.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    # The finished run is protected from a new launch, as with one process.
    assert "--resume" in _one_error_line(_cli("distill", "run", str(path), "--nproc", "2"))


def test_a_body_that_ignores_the_face_pose_keeps_ignoring_it(shared, tmp_path):
    """`body.ignore_face_pose`: the body morpher trains (its loss moves) with its face-pose weights
    exactly zero throughout, so an expression changes the face patch and nothing else."""
    body = {**_tiny(shared, tmp_path)["body"], "ignore_face_pose": True}
    model_dir = distill(load_config(_write(tmp_path / "still.yaml", _tiny(shared, tmp_path / "still", body=body))))
    model = load_character_model(model_dir)
    body = model.body_morpher
    for level, layers in enumerate(body.siren_layers):
        weight, pose = layers[0].linear.weight[:, :, 0, 0], body.pose_columns(level)
        assert weight.shape[1] == pose.stop  # the pose is the last input
        assert torch.count_nonzero(weight[:, pose][:, :39]) == 0
        assert torch.count_nonzero(weight[:, pose][:, 39:]) == weight.shape[0] * 6  # rotations, breathing
        assert torch.count_nonzero(weight[:, :pose.start]) == weight.shape[0] * pose.start  # features, x, y
    pose = torch.zeros(1, 45)
    pose[0, index_of("head_y")] = 0.7
    expression = pose.clone()
    expression[0, :39] = torch.rand(39)
    image = model.image_tensor()[None]
    with torch.no_grad():
        a, b = model.body_morpher(image, pose), model.body_morpher(image, expression)
    torch.testing.assert_close(a.grid_change, b.grid_change, rtol=0, atol=0)
    losses = np.array(load_snapshot(tmp_path / "still")["history"]["body"])[:, 1]
    assert np.isfinite(losses).all() and losses.std() > 0


def test_redistilling_lambda00_into_a_smaller_student_lowers_the_loss(shared, lambda00_dir, tmp_path):
    """lambda_00 (an upstream student) as the teacher: the face loss falls within 16 steps;
    one body step (the 512 student teacher is slow on a CPU) completes a loadable model."""
    config = _one_body_step(shared, tmp_path / "re", lambda00_dir, face_examples=64, face_batch=4)
    model_dir = distill(load_config(_write(tmp_path / "re.yaml", config)))
    snapshot = load_snapshot(tmp_path / "re")
    losses = np.array(snapshot["history"]["face"])[:, 1]
    assert len(losses) == 16 and losses[-3:].mean() < 0.7 * losses[:3].mean(), losses
    assert np.isfinite(snapshot["history"]["body"][0][1])
    model = load_character_model(model_dir)
    assert model.face_morpher.config.channels == 16 and model.body_morpher.config.level_sizes == (256, 512)


@pytest.mark.slow
def test_distilling_from_an_upstream_teacher_directory(shared, tmp_path):
    """The five-network THA4 teacher (the SPEC's deterministic weights, written as upstream's
    .pt files) drives both stages: its warped image and grid change reach the body losses,
    and the run ends in a loadable model."""
    import warnings

    from tha.models.teacher import NETWORKS, deterministic_state_dict, load_manifest, write_teacher_directory

    manifest = load_manifest(shared / "conformance/teacher_state_dict_manifest.json")
    teacher = write_teacher_directory(tmp_path / "teacher",
                                      {name: deterministic_state_dict(name, manifest[name]) for name in NETWORKS})
    config = _one_body_step(shared, tmp_path / "up", teacher, face_examples=4, face_batch=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*gives no warped image")
        model_dir = distill(load_config(_write(tmp_path / "up.yaml", config)))
    history = load_snapshot(tmp_path / "up")["history"]
    assert len(history["face"]) == 2 and len(history["body"]) == 1
    assert np.isfinite(np.array(history["face"] + history["body"])).all()
    assert load_character_model(model_dir).body_morpher.config.level_sizes == (256, 512)


@pytest.mark.slow
def test_rig_distillation_converges(shared, tmp_path):
    """A CPU run of a few minutes: held-out PSNR of the whole student rises by >= 10 dB from
    the student as initialised and ends >= 25 dB, measured by the run itself and again here on
    the saved 512x512 model against the rig teacher."""
    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "configs/distill_test.yaml", [f"prefix={tmp_path / 'conv'}"])
    model_dir = distill(config)
    curves = load_snapshot(tmp_path / "conv")["psnr"]
    start, end = curves["start"][0][1], curves["body"][-1][1]
    assert end >= 25.0 and end - start >= 10.0, curves

    model = load_character_model(model_dir)
    image = load_image_tensor(shared / "tha4-data/images/lambda_00.png")[None]
    poses = PoseSampler().sample(4, torch.Generator().manual_seed(4242))
    student = StudentPoser.from_model(model).pose(image, poses)
    assert psnr(student, RigTeacher().pose(image, poses)) >= 25.0


def test_pixel_subsets_train_exactly_the_full_grid_pixels():
    """`pixels_per_example`: students evaluated at sampled pixel centres give the full-grid
    outputs at those pixels, so subset losses are the full-resolution losses, sampled."""
    from tha.models.student import BodyMorpher, BodyMorpherConfig, FaceMorpher, FaceMorpherConfig, position_grid
    from tha.train.buffer import gather as _gather

    torch.manual_seed(0)
    pose = PoseSampler().sample(2, torch.Generator().manual_seed(1))
    pixels = torch.randint(64 * 64, (2, 300), generator=torch.Generator().manual_seed(2))
    coords = _gather(position_grid(64), pixels)
    face = FaceMorpher(FaceMorpherConfig(image_size=64, channels=16, num_sine_layers=3))
    torch.testing.assert_close(face(pose[:, :39], coords), _gather(face(pose[:, :39]), pixels))
    body = BodyMorpher(BodyMorpherConfig(level_sizes=(16, 32, 64), level_channels=(16, 8, 8), sine_layers_per_level=2))
    image = torch.rand(1, 4, 64, 64).expand(2, -1, -1, -1) * 2 - 1
    for full, sampled in zip(body(image, pose), body(image, pose, coords)):
        torch.testing.assert_close(sampled, _gather(full, pixels), rtol=1e-4, atol=1e-4)


def test_patches_train_exactly_the_full_grid_pixels():
    """`body.patch_size`: the body evaluated on patches (its coarser levels on windows only)
    gives the full-grid outputs at the patches' pixels, odd sizes and patches in the corners
    included, and the same gradients as the scattered-pixel path at those pixels (float64:
    equal to 1e-10; float32 rounding alone differs by ~1e-5)."""
    from tha.models.student import BodyMorpher, BodyMorpherConfig, position_grid
    from tha.train.buffer import gather as _gather
    from tha.train.distill import patch_pixels

    torch.manual_seed(0)
    pose = PoseSampler().sample(2, torch.Generator().manual_seed(1))
    body = BodyMorpher(BodyMorpherConfig(level_sizes=(16, 32, 64), level_channels=(16, 8, 8), sine_layers_per_level=2))
    with torch.no_grad():
        body.last_linear.weight.normal_(0, 0.1)  # a field that moves (training starts it at zero)
    image = torch.rand(1, 4, 64, 64).expand(2, -1, -1, -1) * 2 - 1
    whole = body(image, pose)
    for patch, count in ((8, 6), (7, 5), (64, 1)):
        pixels = patch_pixels(torch.Generator().manual_seed(patch), 2, count * patch * patch, patch, 64)
        square = (torch.arange(patch)[:, None] * 64 + torch.arange(patch)).flatten()
        pixels[0, :patch * patch] = square  # top-left corner
        pixels[1, -patch * patch:] = square + (64 - patch) * 65  # bottom-right corner
        coords = _gather(position_grid(64), pixels)
        for full, patched in zip(whole, body(image, pose, coords, patch)):
            torch.testing.assert_close(patched, _gather(full, pixels), rtol=1e-4, atol=1e-4)
        body64, grads = body.double(), []
        for size in (patch, 0):
            body64.zero_grad()
            body64(image.double(), pose.double(), coords.double(), size).blended_image.square().mean().backward()
            grads.append([p.grad.clone() for p in body64.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        body.float()


def test_patch_pixels_cover_the_edges_as_often_as_the_middle():
    from tha.train.distill import patch_pixels

    pixels = patch_pixels(torch.Generator().manual_seed(3), 400, 4 * 16 * 16, 16, 64)
    assert pixels.shape == (400, 1024) and pixels.min() >= 0 and pixels.max() < 64 * 64
    rows, columns = pixels.view(400, 4, 16, 16) // 64, pixels.view(400, 4, 16, 16) % 64
    assert (rows.diff(dim=2) == 1).all() and (columns.diff(dim=3) == 1).all()  # whole square patches
    per_row = torch.bincount(rows.flatten(), minlength=64).float()
    middle = per_row[16:48].mean()
    # each edge row as often as a middle row (within sampling noise), none more than twice
    assert per_row[[0, 63]].min() > 0.8 * middle and per_row.max() < 2.1 * middle, per_row / middle


def test_bad_schedules_yaml_prefixes_and_snapshots_are_one_clear_line(shared, tmp_path):
    def run(name: str, *extra: str, **changes) -> str:
        config = _tiny(shared, tmp_path / name)
        config.update(changes)
        return _one_error_line(_cli("distill", "run", str(_write(tmp_path / f"{name}.yaml", config)), *extra))

    face = _tiny(shared, tmp_path)["face"]
    assert "negative" in run("neg", face={**face, "num_examples": -5})
    assert "lr_drop_factor" in run("drops", face={**face, "lr_drop_at": [8, 16], "lr_drop_factor": [3.0]})
    assert "teacher_batch_size" in run("tb", teacher_batch_size=0)
    body = _tiny(shared, tmp_path)["body"]
    assert "patch_size" in run("patch", body={**body, "pixels_per_example": 100, "patch_size": 8})
    (tmp_path / "broken.yaml").write_text("prefix: [unclosed\nteacher: rig\n")
    assert "not valid YAML" in _one_error_line(_cli("distill", "run", str(tmp_path / "broken.yaml")))
    (tmp_path / "a_file").write_text("x")
    assert "is a file" in run("under", prefix=str(tmp_path / "a_file/run"))
    assert "is a file" in run("isfile", prefix=str(tmp_path / "a_file"))
    # something in the way of an output inside the prefix: refused before training, not after it
    (tmp_path / "cm_in_way").mkdir()
    (tmp_path / "cm_in_way/character_model").write_text("x")
    assert "character_model is a file where the run writes" in run("cm_in_way", prefix=str(tmp_path / "cm_in_way"))
    (tmp_path / "crowded/snapshot.pt").mkdir(parents=True)
    assert "snapshot.pt is a folder where the run writes" in run("crowded", prefix=str(tmp_path / "crowded"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "not writable" in run("locked", prefix=str(locked / "run"))
    # A snapshot cut short (a full disk, a copy interrupted): one line, and the file is kept.
    (tmp_path / "cut").mkdir()
    whole = tmp_path / "whole"
    short = _tiny(shared, whole, face={**face, "num_examples": 8}, body={"resolution": 32, "phases": [
        {"end": 4, "learning_rate": 1e-3, "blended": 1, "warped": 1, "grid_change": 1, "color_change": 1}]})
    distill(load_config(_write(tmp_path / "whole.yaml", short)))
    data = (whole / "snapshot.pt").read_bytes()
    (tmp_path / "cut/snapshot.pt").write_bytes(data[:len(data) // 2])
    line = run("cut", "--resume", prefix=str(tmp_path / "cut"))
    assert "corrupt or truncated" in line and (tmp_path / "cut/snapshot.pt").stat().st_size == len(data) // 2
    # A whole zip whose contents torch refuses with a ValueError (an unknown byte order) was a traceback.
    (tmp_path / "odd").mkdir()
    with zipfile.ZipFile(whole / "snapshot.pt") as good, zipfile.ZipFile(tmp_path / "odd/snapshot.pt", "w") as odd:
        for item in good.infolist():
            odd.writestr(item, b"middle" if item.filename.endswith("/byteorder") else good.read(item))
    line = run("odd", "--resume", prefix=str(tmp_path / "odd"))
    assert "odd/snapshot.pt is corrupt or truncated" in line and "Unknown endianness type: middle" in line, line
    assert not list(tmp_path.glob("[!wco]*/snapshot.pt"))


@pytest.mark.parametrize("override, needle", [
    ("num_sample_poses=0", "num_sample_poses must be at least 1"),
    ("face.resolution=0", "face.resolution 0 must divide 128"),
    ("body.resolution=3", "body.resolution 3 must divide 512"),
    ("face_student.channels=0", "face_student.channels = 0 is outside 1 to 4096"),
    ("body_student.level_channels=[0, 4]", "body_student.level_channels[0] = 0 is outside"),
    ("body_student.level_channels=[]", "has 0 levels; give 1 to 6 widths"),
    ("body_student.level_channels=[4, 4, 4, 4, 4, 4, 4]", "has 7 levels; give 1 to 6 widths"),
    ("face_student.num_sine_layers=0", "face_student.num_sine_layers = 0 is outside 1 to 64"),
    ("face.learning_rate=-1", "face.learning_rate = -1.0 must be positive"),
    ("face.lr_drop_factor=[0.0]", "face.lr_drop_factor[0] = 0.0 must be positive"),
    ("face.mask_weight=-1", "face.mask_weight = -1.0 is a loss weight"),
    # inf passed `> 0` / `>= 0`: lr=inf trained a NaN student
    ("face.learning_rate=inf", "face.learning_rate = inf must be positive and finite"),
    ("face.lr_drop_factor=[.inf]", "face.lr_drop_factor[0] = inf must be positive and finite"),
    ("face.learning_rate=nan", "face.learning_rate = nan must be positive and finite"),
    ("face.mask_weight=inf", "face.mask_weight = inf is a loss weight; give a finite 0 or more"),
    ("body.patch_size=-2", "body.patch_size -2 is negative"),
])
def test_student_sizes_rates_and_weights_are_checked_on_load(shared, tmp_path, override, needle):
    """Each was a traceback from inside the first step (a division by zero, an empty tuple, a
    40 GB allocation, torch's "Invalid learning rate") before this check."""
    path = _write(tmp_path / "c.yaml", _tiny(shared, tmp_path / "o"))  # body.resolution 32: 6 levels at most
    with pytest.raises(ThaError, match=re.escape(needle)):
        load_config(path, [override])


def test_set_values_are_yaml(shared, tmp_path):
    path = _write(tmp_path / "c.yaml", _tiny(shared, tmp_path / "o"))
    config = load_config(path, ["face.lr_drop_at=[10, 20]", "face.lr_drop_factor=[2.0, 4.0]", "reuse=4",
                                "teacher_dtype=float16"])
    assert config.face.lr_drop_at == [10, 20] and config.face.lr_drop_factor == [2.0, 4.0] and config.reuse == 4


def test_buffered_reused_examples_resume_exactly(shared, tmp_path, capsys):
    """teacher_batch_size 16 with reuse 2: each rendered example trains twice, a buffer spans
    several steps, and a run stopped mid-buffer resumes to the uninterrupted run's weights
    (the body on patches of its pixels)."""
    face = {"num_examples": 48, "learning_rate": 1e-3, "lr_drop_at": [], "lr_drop_factor": [], "resolution": 16,
            "pixels_per_example": 64}
    body = {**_tiny(shared, tmp_path)["body"], "pixels_per_example": 2 * 8 * 8, "patch_size": 8}
    config = _tiny(shared, tmp_path / "buf", teacher_batch_size=16, reuse=2, face=face, body=body,
                   snapshot_every=1000)
    straight = distill(load_config(_write(tmp_path / "buf.yaml", config)))
    printed = capsys.readouterr().out
    for stage in ("face", "body"):  # each stage reports its rate and time left
        assert re.search(rf"{stage} morpher: [\d.]+ examples/s \(teacher \d+% of the time\), ETA [\d.]+ min", printed), printed
    # the same run cut after 20 face examples (mid-buffer: 16 rendered, 8 steps of 4 from them)
    cut = _tiny(shared, tmp_path / "cut", teacher_batch_size=16, reuse=2, snapshot_every=20,
                face={**face, "num_examples": 48}, body=body)
    path = _write(tmp_path / "cut.yaml", cut)
    from tha.train import distill as distill_module

    real = distill_module.Distiller.train_stage
    calls = []

    def stop_after_first_snapshot(self, stage, snapshot, writer):
        original = self._snapshot

        def snap(*args, **kwargs):
            original(*args, **kwargs)
            raise KeyboardInterrupt

        self._snapshot = snap
        calls.append(stage.name)
        real(self, stage, snapshot, writer)

    distill_module.Distiller.train_stage = stop_after_first_snapshot
    try:
        with pytest.raises(KeyboardInterrupt):
            distill(load_config(path))
    finally:
        distill_module.Distiller.train_stage = real
    snapshot = load_snapshot(tmp_path / "cut")
    assert snapshot["stage"] == "face" and snapshot["examples"] == 20 and snapshot["fill_step"] == 5
    resumed = distill(load_config(path), resume=True)
    a = np.array(load_snapshot(tmp_path / "buf")["history"]["face"])
    b = np.array(load_snapshot(tmp_path / "cut")["history"]["face"])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    ma, mb = load_character_model(resumed), load_character_model(straight)
    for key, value in mb.face_morpher.state_dict().items():
        torch.testing.assert_close(ma.face_morpher.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    for key, value in mb.body_morpher.state_dict().items():
        torch.testing.assert_close(ma.body_morpher.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    assert np.isfinite(np.array(load_snapshot(tmp_path / "buf")["history"]["body"])).all()


def test_animator_poses_include_what_the_animator_shows():
    """`poses: animator`: half the poses carry an emotion preset's face, with blinks and mouth
    shapes over it (the sampler alone never draws a blink under joy's happy_wink), a quarter are
    turned toward the rotation limits, the same poses again from the same generator state."""
    from tha.runtime.emotions import load_emotions
    from tha.train.poses import AnimatorPoseSampler, pose_source

    assert isinstance(pose_source("animator", Path), AnimatorPoseSampler)
    sampler = AnimatorPoseSampler()
    poses = sampler.sample(400, torch.Generator().manual_seed(5))
    torch.testing.assert_close(poses, sampler.sample(400, torch.Generator().manual_seed(5)), rtol=0, atol=0)
    wink, happy = index_of("eye_wink_left"), index_of("eye_happy_wink_left")
    assert ((poses[:, wink] > 0.2) & (poses[:, happy] > 0.2)).sum() >= 5  # a blink during joy-like emotions
    assert not ((PoseSampler().sample(400, torch.Generator().manual_seed(5))[:, [wink, happy]] > 0).all(1)).any()
    eyebrows = slice(0, wink)  # the twelve eyebrow parameters come first
    presets = torch.from_numpy(np.stack(list(load_emotions().values())))[:, eyebrows].float()
    presets = presets[presets.abs().sum(1) > 0]  # a preset that moves the eyebrows
    share = len(presets) / len(load_emotions()) / 2  # half the poses, this share of the presets
    eyebrows_of_a_preset = (poses[:, None, eyebrows] == presets[None]).all(-1).any(-1).float().mean()
    assert abs(eyebrows_of_a_preset - share) < 0.1, (eyebrows_of_a_preset, share)
    rotations = poses[:, index_of("iris_rotation_x"):]
    assert rotations.abs().sum(1).gt(0).all()  # rotations still drawn for every pose
    # A quarter turn head and body toward their limits (uniform draws: 3% have all five >= 0.5),
    # some all the way to a corner the sliders reach.
    turns = poses[:, AnimatorPoseSampler.TURNS]
    assert 0.2 < (turns.abs() >= 0.5).all(1).float().mean() < 0.35
    assert ((turns > 0.8).all(1) | (turns < -0.8).all(1)).sum() >= 2
    assert (turns.abs() == 1.0).all(1).sum() >= 2  # the corner itself, which the sliders reach
    assert turns.abs().max() <= 1.0


def test_distill_bench_times_the_distillers_own_steps(tmp_path, monkeypatch):
    """`tha bench --distill` runs `Distiller.step`, the step `tha distill` trains with, once per
    batch, and nothing around it (no samples, snapshots or TensorBoard files)."""
    from tha.train import bench
    from tha.train.distill import Distiller

    small = {"face.resolution": 16, "body.resolution": 32, "face_student.channels": 16,
             "face_student.num_sine_layers": 2, "body_student.level_channels": [16, 8],
             "body_student.sine_layers_per_level": 2}
    config = bench._config(tmp_path, "rig", "cpu", 2, 8, **small)
    steps = []
    real = Distiller.step
    monkeypatch.setattr(Distiller, "step", lambda self, run: steps.append(run.stage.name) or real(self, run))
    for stage in ("face", "body"):
        rate, teacher_share = bench._stage_rate(config, stage)
        assert rate > 0 and 0 < teacher_share < 1
    assert steps == ["face"] * 4 + ["body"] * 4
    assert not (tmp_path / "run").exists()


def test_resume_refuses_a_character_image_changed_since_the_snapshot(shared, tmp_path):
    """The config text was the same, so a resume went on with another character's image, mixing
    a face learned on one with the other's character.png."""
    import shutil

    image, _ = _images(shared)
    copy = tmp_path / "mychar.png"
    shutil.copyfile(image, copy)
    short = _tiny(shared, tmp_path / "run", character_image_file_name=str(copy),
                  face={**_tiny(shared, tmp_path)["face"], "num_examples": 8},
                  body={"resolution": 32, "phases": [
                      {"end": 4, "learning_rate": 1e-3, "blended": 1, "warped": 1, "grid_change": 1, "color_change": 1}]})
    config = _write(tmp_path / "run.yaml", short)
    distill(load_config(config))
    assert set(load_snapshot(tmp_path / "run")["inputs"]) == {"character_image_file_name", "face_mask_image_file_name"}
    shutil.copyfile(shared / "tha4-data/images/lambda_01.png", copy)
    line = _one_error_line(_cli("distill", "run", str(config), "--resume"))
    assert "character_image_file_name changed since" in line and "put the old file back" in line
    shutil.copyfile(image, copy)  # the same bytes again: the resume is allowed
    distill(load_config(config), resume=True)


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares ``width`` x ``height``: opening reads only the header."""
    import struct
    import zlib

    Image.new("1", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # its CRC over type and fields
    path.write_bytes(bytes(data))
    return path


@pytest.mark.filterwarnings("error")
def test_init_refuses_a_huge_image_from_its_header(shared, tmp_path):
    """A 14000x14000 PNG was PIL's DecompressionBombError traceback; 10000x10000 (PIL's warning,
    not its error) was decoded whole before the size check."""
    from tha.train.inputs import load_face_mask

    image, mask = _images(shared)
    bomb = _png_declaring(tmp_path / "bomb.png", 14000, 14000)
    line = _one_error_line(_cli("distill", "init", str(bomb), str(mask), "-o", str(tmp_path / "run")))
    assert "character image" in line and "pixel limit" in line and "512x512" in line
    large = _png_declaring(tmp_path / "large.png", 10000, 10000)
    with pytest.raises(ThaError, match="face mask .* is 10000x10000 pixels, over the pixel limit"):
        load_face_mask(large)  # and no DecompressionBombWarning (an error here)
    assert not (tmp_path / "run").exists()


def test_init_refuses_an_output_that_is_a_file_or_under_one(shared, tmp_path):
    image, mask = _images(shared)
    (tmp_path / "a_file").write_text("keep me")
    assert "a_file is a file" in _one_error_line(_cli("distill", "init", str(image), str(mask), "-o", str(tmp_path / "a_file")))
    assert "lies under" in _one_error_line(_cli("distill", "init", str(image), str(mask), "-o", str(tmp_path / "a_file/run")))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "not writable" in _one_error_line(_cli("distill", "init", str(image), str(mask), "-o", str(locked / "run")))
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_resume_refuses_a_torch_file_that_is_not_a_snapshot(shared, tmp_path):
    """A plain dict or a student's state dict where PREFIX/snapshot.pt should be was a KeyError
    traceback ('config'); the file is left as it was."""
    (tmp_path / "plain").mkdir()
    torch.save({"a": 1}, tmp_path / "plain/snapshot.pt")
    config = _write(tmp_path / "plain.yaml", _tiny(shared, tmp_path / "plain"))
    line = _one_error_line(_cli("distill", "run", str(config), "--resume"))
    assert f"{tmp_path / 'plain/snapshot.pt'} is not a tha distill snapshot" in line and "change `prefix`" in line
    assert torch.load(tmp_path / "plain/snapshot.pt") == {"a": 1}
    (tmp_path / "student").mkdir()
    torch.save({"weight": torch.zeros(2)}, tmp_path / "student/snapshot.pt")
    with pytest.raises(ThaError, match="is not a tha distill snapshot"):
        load_snapshot(tmp_path / "student")


def test_init_writes_the_teacher_as_an_absolute_path_and_refuses_a_missing_one(shared, tmp_path):
    from cli import tha

    image, mask = _images(shared)
    (tmp_path / "teachers/mine").mkdir(parents=True)
    result = tha("distill", "init", image, mask, "-o", "run", "--teacher", "teachers/mine", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert load_config(tmp_path / "run/config.yaml").teacher == str(tmp_path / "teachers/mine")
    missing = tha("distill", "init", image, mask, "-o", "run2", "--teacher", "teachers/gone", cwd=tmp_path, timeout=120)
    assert "--teacher teachers/gone does not exist" in _one_error_line(missing)
    assert not (tmp_path / "run2").exists()


@pytest.mark.parametrize("folder", ["take #2: final", "it's \"${x}\" \\${oc.env:HOME}"])
def test_init_config_round_trips_odd_paths(shared, tmp_path, folder):
    """` #` (a YAML comment marker unquoted) and a colon, and `${x}`, which was read back as an
    OmegaConf interpolation (an error, or another value for `${oc.env:...}`): quotes and a
    backslash before `${` survive too."""
    image, mask = _images(shared)
    odd = tmp_path / folder
    odd.mkdir()
    (odd / "char.png").write_bytes(image.read_bytes())
    (odd / "mask.png").write_bytes(mask.read_bytes())
    result = _cli("distill", "init", str(odd / "char.png"), str(odd / "mask.png"), "-o", str(odd / "run"),
                  "--teacher", str(odd))
    assert result.returncode == 0, result.stderr
    config = load_config(odd / "run/config.yaml")
    assert config.character_image_file_name == str(odd / "char.png")
    assert config.face_mask_image_file_name == str(odd / "mask.png") and config.teacher == str(odd)
    assert Path(config.character_image_file_name).is_file()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_names_the_last_snapshot_and_the_command_to_resume(shared, tmp_path, signum, code):
    """Ctrl+C ended the run silently; now one line says where to resume from and how, exit 130.
    SIGTERM (a `kill`, a scheduler) exited 143 without that line: it says the same now."""
    face = {**_tiny(shared, tmp_path)["face"], "num_examples": 10**6}  # runs until interrupted
    path = _write(tmp_path / "long.yaml", _tiny(shared, tmp_path / "long", face=face))
    # A shell without job control starts background commands with SIGINT ignored, and Python then
    # keeps it ignored: the run is given the default disposition, as a terminal's Ctrl+C finds it.
    proc = subprocess.Popen([*THA, "distill", "run", str(path), "--set", "snapshot_every=8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "long/snapshot.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a run of a million examples must not outlive a failed check
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [f"interrupted; the last snapshot is {tmp_path / 'long/snapshot.pt'}; resume from it with: "
                     f"tha distill run {path} --set snapshot_every=8 --resume"], err
    assert load_snapshot(tmp_path / "long")["stage"] == "face"


@pytest.mark.parametrize("mode", ["1", "P", "P with transparency"])
def test_face_masks_in_1_bit_and_palette_modes_load(shared, tmp_path, mode):
    """Valid masks saved as 1-bit or palette PNGs were refused for their mode."""
    from tha.train.inputs import load_face_mask

    _, mask = _images(shared)
    rgb = Image.open(mask).convert("RGB")
    if mode == "1":
        converted = rgb.convert("L").convert("1", dither=Image.Dither.NONE)
    else:
        converted = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
        if mode == "P with transparency":
            converted.info["transparency"] = bytes([0, 0])  # both entries transparent: colours still count
    converted.save(tmp_path / "mask.png", **({"transparency": converted.info["transparency"]}
                                            if "transparency" in converted.info else {}))
    assert Image.open(tmp_path / "mask.png").mode == mode[0]
    np.testing.assert_array_equal(load_face_mask(tmp_path / "mask.png"), load_face_mask(mask))


def test_long_reasons_are_cut_at_a_word_boundary(tmp_path):
    """torch's weights_only refusal is a paragraph of advice (with terminal bold codes) before
    the line naming what it refused; its first line was quoted, cut at 100 characters mid-word."""
    import datetime

    from tha.models.errors import REASON_LIMIT

    from tha.train.poses import load_pose_dataset

    torch.save(datetime.date(2020, 1, 1), tmp_path / "poses.pt")  # a pickled object, refused by weights_only
    with pytest.raises(ThaError) as caught:
        load_pose_dataset(tmp_path / "poses.pt")
    reason = re.search(r"pose tensor file \((.*)\); ", str(caught.value)).group(1)
    assert "datetime.date" in reason and "\x1b" not in reason, reason
    try:
        torch.load(tmp_path / "poses.pt", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch raises, its refusal line is what is quoted
        full = next(line for line in str(err).splitlines() if "datetime.date" in line).split("error: ", 1)[1]
    assert len(full) > REASON_LIMIT and reason.endswith("…") and len(reason) <= REASON_LIMIT + 1
    kept = reason[:-1]
    assert full.startswith(kept) and full[len(kept):][:1] in (" ", ",", ".", ";", ":"), (kept, full)


def test_relative_paths_resolve_against_the_configs_folder(shared, tmp_path, monkeypatch):
    """prefix was resolved beside the config while inputs fell back to the cwd: upstream's
    example (all paths relative to its repository root) put its output in a copy of its own
    path below the config's folder. A config's paths now share one base folder."""
    from tha.train.inputs import resolve_input

    image, mask = _images(shared)
    root = tmp_path / "upstream"
    (root / "data/images").mkdir(parents=True)
    (root / "data/images/c.png").write_bytes(image.read_bytes())
    (root / "data/images/m.png").write_bytes(mask.read_bytes())
    example = root / "data/distill_examples/c"
    example.mkdir(parents=True)
    _write(example / "config.yaml", {"prefix": "data/distill_examples/c", "teacher": "rig",
                                     "character_image_file_name": "data/images/c.png",
                                     "face_mask_image_file_name": "data/images/m.png"})
    monkeypatch.chdir(root)  # as upstream runs its examples
    config = load_config(example / "config.yaml")
    assert config.output == example
    assert resolve_input(config, config.character_image_file_name, "c") == root / "data/images/c.png"
    # a config of our own: everything beside it, whatever the cwd holds
    own = tmp_path / "own"
    (own / "data/images").mkdir(parents=True)
    (own / "data/images/c.png").write_bytes(image.read_bytes())
    _write(own / "config.yaml", {"prefix": "out", "teacher": "rig", "poses": "poses.pt",
                                 "character_image_file_name": "data/images/c.png",
                                 "face_mask_image_file_name": str(mask)})
    config = load_config(own / "config.yaml")
    assert config.output == own / "out" and config.path(config.poses) == own / "poses.pt"
    assert resolve_input(config, config.character_image_file_name, "c") == own / "data/images/c.png"


def test_curve_draws_a_saved_log_and_refuses_what_is_not_one(tmp_path):
    """`python -m tha.train.curve` (README): a log's held-out PSNR lines become a PNG chart; a
    typo'd source was a FileNotFoundError traceback and no arguments an IndexError."""
    log = tmp_path / "run.log"
    log.write_text("face morpher: 1000 examples, held-out PSNR 24.50 dB at 0.5 min\r"
                   "face morpher: 2000 examples, held-out PSNR 28.25 dB at 1.0 min\n"
                   "body morpher: 1000 examples, held-out PSNR 27.00 dB at 1.5 min\n")
    curve = [sys.executable, "-m", "tha.train.curve"]
    done = subprocess.run([*curve, str(log), str(tmp_path / "c.png")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"wrote {tmp_path / 'c.png'}" in done.stdout, done.stderr
    chart = Image.open(tmp_path / "c.png")
    assert chart.format == "PNG" and chart.size == (700, 400)
    failed = subprocess.run(curve, capture_output=True, text=True, timeout=120)  # argparse: usage, then its error
    assert failed.returncode == 2 and "the following arguments are required" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    for args, needle in (([str(tmp_path / "nope"), str(tmp_path / "d.png")], "cannot read"),
                         ([str(tmp_path / "c.png"), str(tmp_path / "d.png")], "has no held-out PSNR lines")):
        assert_one_line_error(subprocess.run([*curve, *args], capture_output=True, text=True, timeout=120),
                              needle, code=2)
    assert not (tmp_path / "d.png").exists()


def test_init_keeps_an_existing_preview_refuses_a_yaml_folder_and_names_the_masks_format(shared, tmp_path):
    """preview.png was replaced silently while config.yaml was refused; `-o run/config.yaml`
    made a folder named config.yaml; a JPEG mask was told to be "a 512x512 RGBA PNG"."""
    from tha.train.init import init_run

    image, mask = _images(shared)
    run = tmp_path / "run"
    run.mkdir()
    (run / "preview.png").write_bytes(b"the user's picture")
    with pytest.raises(ThaError, match="preview.png already exists; choose another -o folder"):
        init_run(image, mask, run, "rig")
    assert (run / "preview.png").read_bytes() == b"the user's picture" and not (run / "config.yaml").exists()

    line = _one_error_line(_cli("distill", "init", str(image), str(mask), "-o", str(tmp_path / "di5/config.yaml")))
    assert "-o is the run's folder" in line and f"-o {tmp_path / 'di5'}" in line, line
    assert not (tmp_path / "di5").exists()

    Image.open(mask).convert("RGB").save(tmp_path / "mask.jpg")
    with pytest.raises(ThaError, match=r"face mask .*mask.jpg is a JPEG file, not a PNG; save it as a 512x512 RGB "
                                       r"PNG of 0 and 255 values"):
        init_run(image, tmp_path / "mask.jpg", tmp_path / "other", "rig")
