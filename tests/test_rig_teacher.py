"""The analytic rig teacher: the Poser contract on the real lambda_00 character, and each
pose group moving the part of the image it drives (and nothing where it should not)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tha.models.image import load_image_tensor
from tha.models.pose import neutral_pose, pose_from_dict
from tha.models.poser import FACE_COLS, FACE_ROWS, Poser
from tha.models.rig_teacher import CROP_COLS, CROP_ROWS, FACE_IN_CROP, RigTeacher


@pytest.fixture(scope="module")
def image(shared):
    return load_image_tensor(shared / "tha4-data/images/lambda_00.png")[None]


def _pose(**values) -> torch.Tensor:
    return torch.from_numpy(pose_from_dict(values) if values else neutral_pose())[None]


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(H,W) bool: pixels that differ visibly."""
    return (a - b).abs().amax(dim=(0, 1)) > 0.02


def test_contract_and_neutral_pose_is_identity(image):
    rig = RigTeacher()
    assert isinstance(rig, Poser)
    poses = torch.cat([_pose(), _pose(mouth_aaa=1.0, head_y=0.5)])
    stages = rig.stages(image, poses)
    assert stages["image"].shape == (2, 4, 512, 512)
    assert stages["face_teacher_image"].shape == (2, 4, 192, 192)
    assert stages["grid_change"].shape == (2, 2, 512, 512)
    assert torch.equal(rig.pose(image, poses), stages["image"])
    # The neutral pose leaves the character as it is (to bilinear round-off).
    assert (stages["image"][0] - image[0]).abs().max() < 1e-4
    assert (stages["image"][1] - image[0]).abs().max() > 0.5


def test_face_only_and_face_target_crop_is_the_student_patch_place(image):
    pose = _pose(eye_wink_left=1.0, mouth_ooo=0.8)
    face = RigTeacher(face_only=True).stages(image, pose)
    full = RigTeacher().stages(image, pose)
    assert torch.equal(face["face_teacher_image"], full["face_teacher_image"])
    assert torch.equal(face["image"], full["face_morphed_full"])
    # The student's target [48:176, 32:160] of the 192 crop is exactly image rows 80:208, cols 192:320.
    patch = face["face_teacher_image"][:, :, FACE_IN_CROP[0], FACE_IN_CROP[1]]
    assert torch.equal(patch, face["face_morphed_full"][:, :, FACE_ROWS, FACE_COLS])
    assert CROP_ROWS.start + FACE_IN_CROP[0].start == FACE_ROWS.start
    assert CROP_COLS.start + FACE_IN_CROP[1].start == FACE_COLS.start


def test_face_morphs_stay_in_the_face_crop_and_where_they_belong(image):
    rig = RigTeacher()
    neutral = rig.stages(image, _pose())["image"]
    wink = _changed(rig.stages(image, _pose(eye_wink_left=1.0))["image"], neutral)
    mouth = _changed(rig.stages(image, _pose(mouth_aaa=1.0))["image"], neutral)
    for changed in (wink, mouth):
        outside = changed.clone()
        outside[CROP_ROWS, CROP_COLS] = False
        assert changed.sum() > 100 and not outside.any()
    rows, cols = np.nonzero(wink.numpy())
    assert cols.mean() < 256  # the left eye (image left) and not the right one
    assert rows.mean() < np.nonzero(mouth.numpy())[0].mean()  # eyes above the mouth


def test_head_turn_moves_the_head_not_the_legs(image):
    rig = RigTeacher()
    neutral = rig.stages(image, _pose())["image"]
    turned = _changed(rig.stages(image, _pose(head_y=1.0))["image"], neutral)
    assert turned[:200].sum() > 1000
    assert turned[400:].sum() == 0
    lean = _changed(rig.stages(image, _pose(body_y=1.0))["image"], neutral)
    assert lean[400:].sum() > 1000


def test_float64_stays_float64_and_matches_float32(image):
    pose = _pose(eye_happy_wink_right=0.7, mouth_iii=0.5, neck_z=-0.6, breathing=1.0)
    rig = RigTeacher()
    out32 = rig.stages(image, pose)
    out64 = rig.stages(image.double(), pose.double())
    for name in ("face_teacher_image", "face_morphed_full", "grid_change", "image"):
        assert out64[name].dtype == torch.float64
        assert (out64[name].float() - out32[name]).abs().max() < 1e-3
