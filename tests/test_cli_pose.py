"""`tha pose`, `tha info`, `tha models fetch` as a user runs them: real processes, real files."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tha.models.image import load_rgba, tensor_to_rgba
from tha.models.pose import pose_to_dict
from cli import assert_one_line_error, tha
from frames import premultiplied, psnr
from upstream import assert_matches_upstream


def shown(path: Path) -> np.ndarray:
    """A PNG as shown (premultiplied), so invisible pixels' colours don't count."""
    return premultiplied(load_rgba(path))


def assert_rgba_close(ours: np.ndarray, expected: np.ndarray) -> None:
    """Alpha within one step; colour compared only where alpha > 0. Straight colour at an alpha
    of a few steps is float noise divided by that alpha, and which side of a rounding such a
    pixel lands on differs between CPUs: so colour weighted by alpha is bounded everywhere
    (2 = one step of colour plus one of alpha), straight colour on 99.9% of visible pixels."""
    ours, expected = ours.astype(int), expected.astype(int)
    assert np.abs(ours[..., 3] - expected[..., 3]).max() <= 1
    assert not ours[ours[..., 3] == 0].any(), "a fully transparent pixel must be written (0,0,0,0)"
    weighted = np.abs(ours[..., :3] * ours[..., 3:] - expected[..., :3] * expected[..., 3:]) / 255.0
    assert weighted.max() <= 2.0
    visible = (ours[..., 3] > 0) & (expected[..., 3] > 0)
    assert np.mean(np.abs(ours - expected)[visible][:, :3].max(-1) <= 1) >= 0.999


def test_pose_png_matches_reference(lambda00_dir, student_reference, tmp_path):
    pose = student_reference["poses"][1]
    (tmp_path / "pose.json").write_text(json.dumps(pose_to_dict(pose)))
    result = tha("pose", str(lambda00_dir), "--pose-file", str(tmp_path / "pose.json"),
                 "-o", str(tmp_path / "out.png"), "--save-tensor", str(tmp_path / "out.npy"))
    assert result.returncode == 0, result.stderr
    expected = tensor_to_rgba(torch.from_numpy(student_reference["blended_image"][1]))
    ours = load_rgba(tmp_path / "out.png")
    assert_rgba_close(ours, expected)
    raw = np.load(tmp_path / "out.npy")
    assert raw.shape == (4, 512, 512) and raw.dtype == np.float32
    assert_matches_upstream(raw, student_reference["blended_image"][1], "--save-tensor")


def test_set_overrides_pose_file_and_moves_the_face(lambda00_dir, tmp_path):
    (tmp_path / "pose.json").write_text(json.dumps({"mouth_aaa": 1.0}))
    closed = tha("pose", str(lambda00_dir), "--pose-file", str(tmp_path / "pose.json"), "--set", "mouth_aaa=0",
                 "-o", str(tmp_path / "closed.png"))
    opened = tha("pose", str(lambda00_dir), "--pose-file", str(tmp_path / "pose.json"), "-o", str(tmp_path / "open.png"))
    assert closed.returncode == 0 and opened.returncode == 0, closed.stderr + opened.stderr
    diff = np.abs(shown(tmp_path / "closed.png") - shown(tmp_path / "open.png")).sum(-1)
    mouth = diff[150:208, 224:288].mean()  # where the mouth is, inside the face box
    assert mouth > 5 * max(diff[300:].mean(), 0.01)


def test_lambda01_renders_a_plausible_character(lambda01_dir, tmp_path):
    """No reference exists for lambda_01: check that its neutral pose reproduces the
    character it was trained on, and that a head turn moves pixels in the head, not the legs."""
    neutral = tha("pose", str(lambda01_dir), "-o", str(tmp_path / "n.png"))
    turned = tha("pose", str(lambda01_dir), "--set", "head_y=0.8", "-o", str(tmp_path / "t.png"))
    assert neutral.returncode == 0 and turned.returncode == 0, neutral.stderr + turned.stderr
    source, out = shown(lambda01_dir / "character.png"), shown(tmp_path / "n.png")
    alpha_src, alpha_out = source[..., 3] > 127, out[..., 3] > 127
    assert (alpha_src & alpha_out).sum() / (alpha_src | alpha_out).sum() > 0.95
    assert psnr(source, out) > 25.0
    moved = np.abs(shown(tmp_path / "t.png") - out).sum(-1)
    assert moved[40:240].mean() > 3 * max(moved[420:].mean(), 0.01)


def test_info_lists_parameters_and_sizes(lambda00_dir):
    result = tha("info", str(lambda00_dir))
    assert result.returncode == 0, result.stderr
    assert "breathing" in result.stdout and "face morpher" in result.stdout and "512x512 RGBA" in result.stdout


@pytest.fixture()
def broken_model(lambda00_dir, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(lambda00_dir, target)
    return target


def test_truncated_checkpoint(broken_model):
    path = broken_model / "body_morpher.pt"
    path.write_bytes(path.read_bytes()[:50000])
    assert_one_line_error(tha("pose", str(broken_model), "-o", "/dev/null"), "body_morpher.pt", "corrupt or truncated")


def test_checkpoint_with_a_missing_key(broken_model):
    path = broken_model / "face_morpher.pt"
    state = torch.load(path, weights_only=True, map_location="cpu")
    del state["siren.sine_layers.3.linear.bias"]
    torch.save(state, path)
    assert_one_line_error(tha("pose", str(broken_model), "-o", "/dev/null"), "face_morpher.pt",
                          "missing keys siren.sine_layers.3.linear.bias")


def test_checkpoint_with_a_pickled_object(broken_model):
    torch.save({"weights": functools.partial(print, "pickled")}, broken_model / "face_morpher.pt")
    assert_one_line_error(tha("pose", str(broken_model), "-o", "/dev/null"), "face_morpher.pt", "not a plain state_dict")


def test_swapped_checkpoints(broken_model):
    face, body = broken_model / "face_morpher.pt", broken_model / "body_morpher.pt"
    data = face.read_bytes()
    face.write_bytes(body.read_bytes())
    body.write_bytes(data)
    assert_one_line_error(tha("pose", str(broken_model), "-o", "/dev/null"), "face_morpher.pt", "does not fit")


def test_rgb_character_image_and_bad_pose_names(broken_model):
    from PIL import Image

    Image.open(broken_model / "character.png").convert("RGB").save(broken_model / "character.png")
    assert_one_line_error(tha("pose", str(broken_model)), "no alpha channel")
    assert_one_line_error(tha("pose", str(broken_model), "--set", "mouth_aah=1"), "unknown pose parameter", "mouth_aaa")
    assert_one_line_error(tha("pose", str(broken_model), "--set", "mouth_aaa=2", "--strict-range"), "outside [0, 1]")
    assert_one_line_error(tha("pose", str(broken_model.parent / "nowhere")), "does not exist")
    assert_one_line_error(tha("info", str(broken_model.parent)), "not a character model")


def test_models_fetch_downloads_and_verifies(lambda00_dir, tmp_path):
    """A real HTTP download from a loopback mirror laid out like upstream's repository."""
    mirror = tmp_path / "mirror"
    shutil.copytree(lambda00_dir, mirror / "lambda_00")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = tha("models", "fetch", "lambda_00", "--cache-dir", str(tmp_path / "cache"), "--base-url", url)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()) == tmp_path / "cache" / "lambda_00"
        for f in lambda00_dir.iterdir():
            assert (tmp_path / "cache" / "lambda_00" / f.name).read_bytes() == f.read_bytes()
        (mirror / "lambda_00" / "face_morpher.pt").write_bytes(b"tampered")
        (tmp_path / "cache" / "lambda_00" / "face_morpher.pt").unlink()
        bad = tha("models", "fetch", "lambda_00", "--cache-dir", str(tmp_path / "cache"), "--base-url", url)
        assert_one_line_error(bad, "checksum")
        assert not (tmp_path / "cache" / "lambda_00" / "face_morpher.pt").exists()
    finally:
        server.shutdown()


def test_models_fetch_offline_says_where_to_put_files(tmp_path):
    from tha.runtime.feed_bench import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # bound a moment ago, then closed: nothing listens
    result = tha("models", "fetch", "lambda_01", "--cache-dir", str(tmp_path), "--base-url", closed)
    assert_one_line_error(result, "cannot download", "by hand", str(tmp_path / "lambda_01"))
    assert_one_line_error(tha("models", "fetch", "lambda_99"), "unknown model")


def test_pose_refuses_an_output_name_that_is_not_png(tmp_path):
    """`-o x.jpg` wrote PNG bytes under a .jpg name; both pose commands refuse it, before any work."""
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    for command in (["pose", demo], ["teacher", "pose", tmp_path / "no_teacher", demo / "character.png"]):
        result = tha(*command, "-o", tmp_path / "x.jpg")
        assert_one_line_error(result, "-o", "x.jpg", "written as a PNG", "x.png", code=2)
        assert not (tmp_path / "x.jpg").exists()
    result = tha("pose", demo, "-o", tmp_path / "x.PNG")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.PNG").read_bytes().startswith(b"\x89PNG")


DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


def _demo_copy(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(DEMO, model)
    return model


def test_pose_refuses_to_write_over_its_own_inputs(tmp_path):
    """`-o MODEL/character.png` replaced the model's image; the teacher's `-o char.png` its input."""
    model = _demo_copy(tmp_path)
    image = (model / "character.png").read_bytes()
    result = tha("pose", model, "-o", model / "character.png")
    assert_one_line_error(result, "-o", "character.png", "input", "another name", code=2)
    result = tha("pose", model / "character_model.yaml", "--save-tensor", model / "face_morpher.pt", "-o", tmp_path / "o.png")
    assert_one_line_error(result, "--save-tensor", "face_morpher.pt", code=2)
    result = tha("teacher", "pose", tmp_path / "no_teacher", model / "character.png", "-o", model / "character.png")
    assert_one_line_error(result, "-o", "character.png", "input", code=2)
    tensor = tmp_path / "in.npy"
    np.save(tensor, np.zeros((4, 512, 512), np.float32))
    result = tha("teacher", "pose", tmp_path / "no_teacher", tensor, "-o", tmp_path / "o.png", "--save-tensor", tensor)
    assert_one_line_error(result, "--save-tensor", "in.npy", "input", code=2)
    assert (model / "character.png").read_bytes() == image and not (tmp_path / "o.png").exists()


def test_save_tensor_needs_an_npy_name_of_its_own_and_is_reported(tmp_path):
    """`--save-tensor x.png` replaced the PNG with NumPy bytes; `x.txt` was taken as it came."""
    for name in ("x.txt", "x.png", "x"):
        result = tha("pose", DEMO, "-o", tmp_path / "x.png", "--save-tensor", tmp_path / name)
        assert_one_line_error(result, "--save-tensor", name, ".npy", code=2)
    (tmp_path / "link.npy").symlink_to(tmp_path / "x.png")  # the same file by another name
    result = tha("pose", DEMO, "-o", tmp_path / "x.png", "--save-tensor", tmp_path / "link.npy")
    assert_one_line_error(result, "--save-tensor", "link.npy", "x.png", code=2)
    assert not (tmp_path / "x.png").exists()
    result = tha("pose", DEMO, "-o", tmp_path / "x.png", "--save-tensor", tmp_path / "t.NPY")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {tmp_path / 'x.png'} and {tmp_path / 't.NPY'}"
    assert np.load(tmp_path / "t.NPY").shape == (4, 512, 512)


def test_pose_refuses_an_output_name_without_a_suffix(tmp_path):
    """`-o noext` wrote a PNG no viewer recognises by name; /dev/null is still written through."""
    result = tha("pose", DEMO, "-o", tmp_path / "noext")
    assert_one_line_error(result, "-o", "noext", "written as a PNG", "noext.png", code=2)
    assert not (tmp_path / "noext").exists()
    assert tha("pose", DEMO, "-o", "/dev/null").returncode == 0


def test_a_model_naming_a_directory_says_so(tmp_path):
    model = _demo_copy(tmp_path)
    (model / "character.png").unlink()
    (model / "character.png").mkdir()
    result = tha("pose", model, "-o", tmp_path / "o.png")
    assert_one_line_error(result, "character.png", "is a directory, not a file", code=2)


@pytest.mark.parametrize("text, needle", [
    ("version https://git-lfs.github.com/spec/v1\noid sha256:9c89\nsize 292867\n", "is a Git LFS pointer"),
    ("<!DOCTYPE html>\n<html><body>Sign in</body></html>\n", "is a web page"),
    ("hello\n", "is a text file"),
])
def test_a_text_file_saved_as_a_checkpoint_is_named_as_such(tmp_path, text, needle):
    """It was "holds pickled objects, not a plain state_dict (Weights only load failed...)"."""
    model = _demo_copy(tmp_path)
    (model / "face_morpher.pt").write_text(text)
    result = tha("pose", model, "-o", tmp_path / "o.png")
    assert_one_line_error(result, "face_morpher.pt", needle, "not a PyTorch checkpoint", "download or export it again",
                          code=2)
    assert "pickled" not in result.stderr
