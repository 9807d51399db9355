"""A student against the rig teacher at every extreme a user can reach: each pose parameter at
its limits, both sides of paired groups together, every emotion preset, and the animator's
combinations (a blink or an open mouth during an emotion, head and body turned together).

`python -m tha.train.extremes MODEL_DIR [--worst OUT.png]` prints the PSNR of each pose over the
whole image and over the pasted face patch's square, worst first, and draws the worst ones
beside the teacher. The face square is scored on its own because a broken face (smeared eyes, a
visible patch border) costs the whole 512x512 image only a few dB: it is 1/16 of the pixels.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from tha.models.poser import FACE_COLS, FACE_ROWS
from tha.models.pose import LOWER, POSE_GROUPS, UPPER, index_of, neutral_pose, pose_from_dict
from tha.models.rig_teacher import RigTeacher
from tha.runtime.emotions import load_emotions
from tha.train.samples import psnr


def extreme_poses() -> dict[str, np.ndarray]:
    """Named poses: every parameter at each limit, paired groups both sides, every emotion
    alone, with a blink and with an open mouth, and head and body turned together."""
    poses = {"neutral": neutral_pose()}
    for group in POSE_GROUPS:
        names = group.parameter_names
        for bound, values in (("upper", UPPER), ("lower", LOWER)):
            if all(values[index_of(n)] == 0.0 for n in names):
                continue
            for name in names:
                poses[f"{name}={bound}"] = pose_from_dict({name: float(values[index_of(name)])})
            if len(names) > 1:
                poses[f"{group.name}={bound}"] = pose_from_dict({n: float(values[index_of(n)]) for n in names})
    blink = {"eye_wink_left": 1.0, "eye_wink_right": 1.0}
    for emotion, pose in load_emotions().items():
        poses[f"emotion {emotion}"] = pose
        poses[f"emotion {emotion} + blink"] = pose_from_dict(blink, base=pose)
        poses[f"emotion {emotion} + mouth_aaa"] = pose_from_dict({"mouth_aaa": 1.0}, base=pose)
    for sign in (-1.0, 1.0):
        turned = {"head_x": sign, "head_y": sign, "neck_z": sign, "body_y": sign, "body_z": sign}
        poses[f"head and body turned {sign:+.0f}"] = pose_from_dict(turned)
    return poses


@torch.inference_mode()
def student_and_teacher(model, names: list[str], batch: int = 8):
    """Yield (name, student image, teacher image), (4,512,512) in [-1,1], for extreme poses."""
    from tha.runtime.backends.torch import TorchBackend

    backend = TorchBackend(model)
    teacher = RigTeacher()
    image = model.image_tensor()[None]
    poses = extreme_poses()
    for start in range(0, len(names), batch):
        chunk = names[start:start + batch]
        want = teacher.pose(image, torch.from_numpy(np.stack([poses[n] for n in chunk])))
        for name, target in zip(chunk, want):
            yield name, backend.render_tensor(poses[name])[0], target


def student_psnr_at_extremes(model) -> dict[str, tuple[float, float]]:
    """{pose name: (whole image, face square) PSNR (dB, [-1,1] RGBA) of ``model``'s student
    against the rig teacher}."""
    face = (slice(None), FACE_ROWS, FACE_COLS)
    return {name: (psnr(student, teacher), psnr(student[face], teacher[face]))
            for name, student, teacher in student_and_teacher(model, list(extreme_poses()))}


def worst_names(scores: dict[str, tuple[float, float]], n: int = 4) -> list[str]:
    """The n/2 worst poses over the whole image, then the worst others over the face square."""
    by_image = sorted(scores, key=lambda name: scores[name][0])[: n // 2]
    by_face = [name for name in sorted(scores, key=lambda name: scores[name][1]) if name not in by_image]
    return by_image + by_face[: n - len(by_image)]


def main(argv: list[str]) -> None:
    import argparse

    from tha.models.character import load_character_model
    from tha.models.errors import ThaError
    from tha.train.samples import write_samples

    summary = " ".join(__doc__.split("\n\n")[0].split())  # the first paragraph
    parser = argparse.ArgumentParser(prog="python -m tha.train.extremes", description=summary)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--worst", type=Path, help="Write teacher | student | difference here: the 2 worst "
                        "poses over the image, then the 2 worst over the face square.")
    args = parser.parse_args(argv)
    try:
        model = load_character_model(args.model_dir)
        scores = student_psnr_at_extremes(model)
        print(" image    face   pose")
        for name, (image, face) in sorted(scores.items(), key=lambda kv: kv[1][0]):
            print(f"{image:6.2f}  {face:6.2f}  {name}")
        for i, what in enumerate(("image", "face square")):
            values = [v[i] for v in scores.values()]
            print(f"{what}: worst {min(values):.2f} dB, median {np.median(values):.2f} dB")
        if args.worst is not None:
            rows = list(student_and_teacher(model, worst_names(scores)))
            write_samples(args.worst, torch.stack([r[2] for r in rows]), torch.stack([r[1] for r in rows]))
            print(f"wrote {args.worst} ({', '.join(r[0] for r in rows)})")
    except ThaError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
