"""A student against the rig teacher at every extreme a user can reach: each pose parameter at
its limits, both sides of paired groups together, every emotion preset, and the animator's
combinations (a blink or an open mouth during an emotion, head and body turned together).

`python -m tha.train.extremes MODEL_DIR [--worst OUT.png]` prints the PSNR of each pose, worst
first, and draws the worst ones beside the teacher.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

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


def student_psnr_at_extremes(model) -> dict[str, float]:
    """{pose name: PSNR (dB, [-1,1] RGBA) of ``model``'s student against the rig teacher}."""
    return {name: psnr(student, teacher)
            for name, student, teacher in student_and_teacher(model, list(extreme_poses()))}


def main(argv: list[str]) -> None:
    import argparse

    from tha.models.character import load_character_model
    from tha.models.errors import ThaError
    from tha.train.samples import write_samples

    parser = argparse.ArgumentParser(prog="python -m tha.train.extremes", description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--worst", type=Path, help="Write teacher | student | difference of the 4 worst poses here.")
    args = parser.parse_args(argv)
    try:
        model = load_character_model(args.model_dir)
        scores = student_psnr_at_extremes(model)
        ranked = sorted(scores.items(), key=lambda kv: kv[1])
        for name, value in ranked:
            print(f"{value:6.2f} dB  {name}")
        print(f"{len(scores)} poses, worst {ranked[0][1]:.2f} dB, median {np.median(list(scores.values())):.2f} dB")
        if args.worst is not None:
            rows = list(student_and_teacher(model, [name for name, _ in ranked[:4]]))
            write_samples(args.worst, torch.stack([r[2] for r in rows]), torch.stack([r[1] for r in rows]))
            print(f"wrote {args.worst} ({', '.join(r[0] for r in rows)})")
    except ThaError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
