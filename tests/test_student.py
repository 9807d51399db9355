"""Upstream-exact students: the shared lambda_00 model reproduces upstream's reference outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tha.models.character import load_character_model
from tha.models.poser import StudentPoser
from upstream import assert_matches_upstream

STAGES = ["face_morpher_output", "blended_image", "alpha", "color_change", "warped_image", "grid_change"]


@pytest.fixture(scope="module")
def reference_outputs(lambda00, student_reference):
    poser = StudentPoser.from_model(lambda00)
    image = lambda00.image_tensor()[None]
    return poser.stages(image, torch.from_numpy(student_reference["poses"]))


def test_character_image_matches_reference_input(lambda00, student_reference):
    image = lambda00.image_tensor().numpy()
    assert np.abs(image - student_reference["image"][0]).max() <= 1e-6


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_matches_upstream(reference_outputs, student_reference, stage):
    ours = reference_outputs[stage].numpy()
    theirs = student_reference[stage]
    assert ours.shape == theirs.shape
    assert_matches_upstream(ours, theirs, stage)


def test_pose_returns_upstreams_composite(lambda00, student_reference):
    """``pose()`` (what every backend draws) is upstream's final image: the composite of
    upstream's own warped image and colour change by its alpha, not one of the layers."""
    layers = ("blended_image", "alpha", "color_change", "warped_image")
    ref = {k: torch.from_numpy(student_reference[k]) for k in layers}
    ours = StudentPoser.from_model(lambda00).pose(lambda00.image_tensor()[None],
                                                   torch.from_numpy(student_reference["poses"]))
    composite = (1 - ref["alpha"]) * ref["warped_image"] + ref["alpha"] * ref["color_change"]
    assert_matches_upstream(ours, composite, "pose() against the composite of upstream's layers")
    assert_matches_upstream(ours, ref["blended_image"], "pose() against upstream's blended image")
    changed = (ref["alpha"] > 0.1).expand_as(ours)  # where the colour change shows, the layers differ
    assert changed.any() and (ours - ref["warped_image"])[changed].abs().max() > 0.05


def test_pose_changes_the_output(reference_outputs):
    neutral, posed = reference_outputs["image"][0], reference_outputs["image"][1]
    assert (neutral - posed).abs().mean() > 1e-3


def test_save_round_trip_is_upstream_format(lambda00, tmp_path):
    """Saved files load back bit-identically and are plain state dicts (upstream's format)."""
    lambda00.save(tmp_path / "copy")
    loaded = load_character_model(tmp_path / "copy")
    for ours, theirs in ((loaded.face_morpher, lambda00.face_morpher), (loaded.body_morpher, lambda00.body_morpher)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    raw = torch.load(tmp_path / "copy" / "face_morpher.pt", weights_only=True, map_location="cpu")
    assert isinstance(raw, dict) and "siren.last_linear.weight" in raw
    assert np.array_equal(loaded.image_rgba, lambda00.image_rgba)


def test_smaller_student_config_round_trips(tmp_path, lambda00):
    """A smaller student is one config away, and its sizes are read back from the files."""
    from tha.models.character import CharacterModel
    from tha.models.student import BodyMorpher, BodyMorpherConfig, FaceMorpher, FaceMorpherConfig

    face = FaceMorpher(FaceMorpherConfig(channels=32, num_sine_layers=3))
    body = BodyMorpher(BodyMorpherConfig(level_sizes=(256, 512), level_channels=(48, 24)))
    CharacterModel(lambda00.image_rgba, face, body).save(tmp_path / "small")
    loaded = load_character_model(tmp_path / "small")
    assert loaded.face_morpher.config == face.config
    assert loaded.body_morpher.config == body.config
    pose = torch.rand(1, 45)
    image = loaded.image_tensor()[None]
    assert torch.allclose(StudentPoser(face, body).pose(image, pose), StudentPoser.from_model(loaded).pose(image, pose))
