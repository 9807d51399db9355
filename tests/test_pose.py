"""The 45 pose parameters: layout from the SPEC, lookups, JSON files, range handling."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tha.models import pose as P
from tha.models.errors import ThaError


def test_layout_matches_spec():
    assert P.POSE_SIZE == 45
    names = P.PARAMETER_NAMES
    assert names[0:2] == ("eyebrow_troubled_left", "eyebrow_troubled_right")
    assert names[12] == "eye_wink_left" and names[23] == "eye_raised_lower_eyelid_right"
    assert names[24:26] == ("iris_small_left", "iris_small_right")
    assert names[26:32] == ("mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo", "mouth_delta")
    assert names[32:37] == ("mouth_lowered_corner_left", "mouth_lowered_corner_right",
                            "mouth_raised_corner_left", "mouth_raised_corner_right", "mouth_smirk")
    assert names[37:] == ("iris_rotation_x", "iris_rotation_y", "head_x", "head_y", "neck_z",
                          "body_y", "body_z", "breathing")
    assert len(set(names)) == 45


def test_ranges_and_categories():
    signed = {n for n in P.PARAMETER_NAMES if P.POSE_PARAMETERS[P.index_of(n)].lower == -1.0}
    assert signed == {"iris_rotation_x", "iris_rotation_y", "head_x", "head_y", "neck_z", "body_y", "body_z"}
    assert all(p.upper == 1.0 for p in P.POSE_PARAMETERS)
    counts = {c: sum(p.category == c for p in P.POSE_PARAMETERS) for c in P.Category}
    assert counts == {P.Category.EYEBROW: 12, P.Category.EYE: 12, P.Category.IRIS_MORPH: 2, P.Category.MOUTH: 11,
                      P.Category.IRIS_ROTATION: 2, P.Category.FACE_ROTATION: 3, P.Category.BODY_ROTATION: 2,
                      P.Category.BREATHING: 1}
    assert np.array_equal(P.neutral_pose(), np.zeros(45, np.float32))


def test_unknown_name_suggests_the_right_one():
    with pytest.raises(ThaError, match="did you mean 'head_x'"):
        P.index_of("hed_x")


def test_out_of_range_is_clamped_with_a_warning_or_refused():
    with pytest.warns(UserWarning, match="clamped to 1"):
        pose = P.pose_from_dict({"head_x": 3.0})
    assert pose[P.index_of("head_x")] == 1.0
    with pytest.raises(ThaError, match="outside"):
        P.pose_from_dict({"mouth_aaa": -0.5}, clamp=False)
    with pytest.raises(ThaError, match="nan"):
        P.pose_from_dict({"mouth_aaa": float("nan")})


def test_assignments_and_pose_files(tmp_path):
    pose = P.parse_assignments(["head_x=0.4", "eye_wink_left=1"])
    assert pose[39] == pytest.approx(0.4) and pose[12] == 1.0 and pose.sum() == pytest.approx(1.4)
    P.save_pose_file(tmp_path / "p.json", pose)
    assert np.allclose(P.load_pose_file(tmp_path / "p.json"), pose)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ThaError, match="JSON object"):
        P.load_pose_file(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{head_x: ")
    with pytest.raises(ThaError, match="not valid JSON"):
        P.load_pose_file(tmp_path / "broken.json")
    with pytest.raises(ThaError, match="NAME=VALUE"):
        P.parse_assignments(["head_x"])
    (tmp_path / "partial.json").write_text(json.dumps({"mouth_aaa": 0.5}))
    assert P.load_pose_file(tmp_path / "partial.json").sum() == pytest.approx(0.5)


@pytest.mark.parametrize("value", ["0.5", True, False, None, [0.5], {"v": 0.5}])
def test_values_that_are_not_numbers_are_refused(value):
    """JSON's "0.5" and true used to pass through float(): a broken pose file posed silently."""
    with pytest.raises(ThaError, match="give a number"):
        P.pose_from_dict({"head_x": value})
    assert P.pose_from_dict({"head_x": 1, "head_y": np.float32(-0.5)})[P.index_of("head_y")] == -0.5
