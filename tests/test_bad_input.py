"""Hostile and broken input to `tha pose` and the library under it: each is one `error:` line
naming the problem and the fix, a non-zero exit, and no user file touched. The model is the
committed demo student (small: each run takes seconds)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tha.models.errors import ThaError
from tha.models.image import load_rgba
from tha.models.limits import MAX_IMAGE_PIXELS, MAX_JSON_DEPTH, parse_json
from cli import assert_one_line_error, tha

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


def png_declaring(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header declares ``width`` x ``height`` RGBA pixels (the
    657 KB 13000x13000 file of the report, without the 657 KB): decoding it would allocate
    width*height*4 bytes, refusing it must not."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
            + chunk(b"IEND", b""))


@pytest.fixture()
def model(tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(DEMO, target)
    return target


@pytest.mark.parametrize("size", [(13000, 13000), (20000, 20000)])  # under and past PIL's own bomb limit
def test_decompression_bombs_are_refused_before_decoding(model, size):
    (model / "character.png").write_bytes(png_declaring(*size))
    assert_one_line_error(tha("pose", str(model), "-o", str(model / "out.png")), "character.png",
                          "over the pixel limit of 16,777,216")
    with pytest.raises(ThaError, match="over the pixel limit"):  # the server's upload path: bytes
        load_rgba(png_declaring(*size))
    assert 13000 * 13000 > MAX_IMAGE_PIXELS >= 512 * 512


def test_fully_transparent_image_is_refused(model):
    Image.new("RGBA", (512, 512), (255, 255, 255, 0)).save(model / "character.png")
    assert_one_line_error(tha("pose", str(model), "-o", str(model / "out.png")), "fully transparent", "alpha")
    assert not (model / "out.png").exists()


def test_model_yaml_that_does_not_parse(model):
    (model / "character_model.yaml").write_text("character_image_file_name: [character.png\n  face: : :\n")
    assert_one_line_error(tha("pose", str(model), "-o", str(model / "out.png")), "character_model.yaml",
                          "not valid YAML", "one `key: file name` per line")
    (model / "character_model.yaml").write_text("character_image_file_name: [1, 2]\n"
                                                "face_morpher_file_name: face_morpher.pt\n"
                                                "body_morpher_file_name: body_morpher.pt\n")
    assert_one_line_error(tha("pose", str(model)), "must be a file name")
    # the model's image given where the model goes
    assert_one_line_error(tha("info", str(model / "character.png")), "character.png is a file, not a character model",
                          "the folder that holds character_model.yaml")


@pytest.mark.parametrize("shape, needle", [
    ((0, 41, 1, 1), "outside [1, 4096]"),          # upstream read this as a width and divided by it
    ((200000, 41, 1, 1), "outside [1, 4096]"),     # and allocated 8 layers of 200000x200000
    ((4000, 41, 1, 1), "describe a network of"),   # in range, but the file holds far fewer values
    ((64, 41), "not (out, in, 1, 1)"),
])
def test_crafted_state_dict_widths_are_refused_before_allocating(model, shape, needle):
    path = model / "face_morpher.pt"
    state = torch.load(path, weights_only=True, map_location="cpu")
    state["siren.sine_layers.0.linear.weight"] = torch.zeros(shape)
    torch.save(state, path)
    assert_one_line_error(tha("pose", str(model), "-o", str(model / "out.png")), "face_morpher.pt", needle)


def test_output_paths_that_cannot_be_written(model, tmp_path):
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "adir").mkdir()
    assert_one_line_error(tha("pose", str(model), "-o", str(tmp_path / "adir")), "is a directory")
    assert_one_line_error(tha("pose", str(model), "-o", str(tmp_path / "afile" / "x.png")), "which is a file")
    assert_one_line_error(tha("pose", str(model), "-o", str(tmp_path / "x.png"), "--save-tensor",
                              str(tmp_path / "afile" / "x.npy")), "--save-tensor", "which is a file")
    # /proc takes no new files, for root too (a chmod-ed folder would not stop root).
    assert_one_line_error(tha("pose", str(model), "-o", "/proc/tha-test.png"), "cannot write in /proc")
    assert (tmp_path / "afile").read_text() == "keep" and not any((tmp_path / "adir").iterdir())
    assert not (tmp_path / "x.png").exists()


def test_failed_pose_leaves_the_old_output_untouched(model, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"the user's earlier picture")
    (tmp_path / "pose.json").write_text('{"head_x": 9}')
    assert_one_line_error(tha("pose", str(model), "--pose-file", str(tmp_path / "pose.json"), "--strict-range",
                              "-o", str(out)), "outside")
    assert out.read_bytes() == b"the user's earlier picture"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_outputs_follow_the_umask(model, tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the finished file gets 0666 less the umask."""
    result = tha("pose", model, "-o", tmp_path / "out.png", "--save-tensor", tmp_path / "out.npy",
                 preexec_fn=lambda: os.umask(0o002))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "out.npy").stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize("text, needle", [
    ('{"head_x": "0.5"}', "give a number"),
    ('{"head_x": true}', "give a number"),
    ('{"head_x": ' + "1" * 5000 + "}", "not valid JSON"),
    ('{"head_x": 1e999}', "not valid JSON"),
    ("[" * 100000 + "]" * 100000, "levels deep"),
])
def test_pose_files_with_wrong_types_huge_numbers_or_deep_nesting(model, tmp_path, text, needle):
    (tmp_path / "pose.json").write_text(text)
    assert_one_line_error(tha("pose", str(model), "--pose-file", str(tmp_path / "pose.json"),
                              "-o", str(tmp_path / "out.png")), "pose file", needle)


def test_json_limits_count_brackets_outside_strings_only():
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(nested, "x") is not None
    with pytest.raises(ThaError, match="levels deep"):
        parse_json("[" + nested + "]", "x")
    assert parse_json(json.dumps({"name": "[" * 1000 + '\\"{'}), "x")["name"].startswith("[[[")


def test_puppet_bench_runs_without_scikit_image():
    """`tha bench --puppet` without the dev extra: the iFacialMocap rows are measured, the
    webcam row is skipped with a line saying what to install."""
    script = ("import sys; sys.modules['skimage'] = None\n"
              "from pathlib import Path\n"
              "from tha.runtime.sources.bench import measure_puppet\n"
              f"rows = measure_puppet(Path({str(DEMO)!r}), 2)\n"
              "print('ROWS', [name for name, _ in rows])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    # A logged warning: on stderr through logging's last-resort handler, as nothing configured logging.
    assert "webcam tracking not measured" in result.stderr and "pip install scikit-image" in result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("ROWS")]
    assert rows and "iFacialMocap datagram -> pixels ms" in rows[0] and "webcam" not in rows[0]


def test_rgba8_colour_is_zero_where_alpha_is(model, tmp_path):
    """A whole frame from `tha pose`: no pixel carries colour under an alpha of 0."""
    assert tha("pose", str(model), "--set", "head_y=0.7", "-o", str(tmp_path / "out.png")).returncode == 0
    rgba = np.asarray(Image.open(tmp_path / "out.png"))
    assert (rgba[..., 3] == 0).any() and not rgba[rgba[..., 3] == 0].any()


@pytest.mark.parametrize("args, fragments", [
    (["view", DEMO, "--fps", "999"], ["'--fps'", "999 is above 240", "see `tha view --help`"]),
    (["serve", DEMO, "--port", "99999"], ["'--port'", "65535", "see `tha serve --help`"]),
    (["pose"], ["Missing argument", "see `tha pose --help`"]),
    (["nosuch"], ["No such command 'nosuch'", "see `tha --help`"]),
    # --model-fps had no range: nan was a traceback, 0 or -5 passed
    (["render", DEMO, "--poses", "t.jsonl", "-o", "x.mp4", "--model-fps", "nan"],
     ["'--model-fps'", "nan is not a number", "from 1 to 240"]),
    (["render", DEMO, "--poses", "t.jsonl", "-o", "x.mp4", "--model-fps", "0"], ["'--model-fps'", "0 is below 1"]),
    # nan was "Input should be less than or equal to 240": a limit it did not break
    (["render", DEMO, "--poses", "t.jsonl", "-o", "x.mp4", "--fps", "nan"], ["'--fps'", "nan is not a number"]),
    (["view", DEMO, "--fps", "nan"], ["'--fps'", "nan is not a number", "see `tha view --help`"]),
    # an unknown preset was silently neutral (the server does that for SillyTavern's sake; a typo should not)
    (["demo", "--emotion", "hapy", "--offscreen"], ["'--emotion'", "'hapy' is not an emotion preset", "joy"]),
    (["render", DEMO, "--poses", "t.jsonl", "-o", "x.mp4", "--emotion", "Joy"], ["'Joy' is not an emotion preset"]),
    pytest.param(["pose", DEMO, "--device", "cuda", "-o", "x.png"], ["no CUDA device here", "use cpu"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_command_line_mistakes_are_one_line(args, fragments):
    """click's own errors (a value out of range, a missing argument, an unknown command) come out
    like ours: one `error:` line, not typer's multi-line box."""
    result = tha(*args, timeout=120)
    assert_one_line_error(result, *fragments, code=2)
    assert result.stderr.count("\n") == 1, result.stderr


def test_serving_on_a_taken_port_is_one_line_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tha("serve", DEMO, "--port", port, timeout=120)
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}", "pass another --port", code=2)
    assert result.stderr.count("\n") == 1, result.stderr  # no backend opened, no startup log


def test_serving_a_missing_model_names_the_model_not_students(tmp_path):
    """It said `--students /x: no such folder` for a MODEL the user typed wrong."""
    from tha.runtime.feed_bench import free_port

    result = tha("serve", tmp_path / "no_such_model", "--port", free_port(), timeout=120)
    assert_one_line_error(result, f"model directory {tmp_path / 'no_such_model'} does not exist")
    assert "--students" not in result.stderr
