"""PNG <-> tensor exactly as the SPEC states, and validation of bad images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tha.models.errors import ThaError
from tha.models.image import linear_to_srgb, load_image_tensor, load_rgba, save_png, srgb_to_linear, tensor_to_rgba


@pytest.mark.parametrize("name", ["lambda_00.png", "lambda_01.png"])
def test_png_tensor_png_round_trip(shared, tmp_path, name):
    path = shared / "tha4-data" / "images" / name
    original = load_rgba(path)
    back = tensor_to_rgba(load_image_tensor(path))
    visible = original[..., 3] > 0
    assert np.array_equal(back[..., 3], original[..., 3])
    assert np.abs(back[visible].astype(int) - original[visible].astype(int)).max() <= 1
    save_png(tmp_path / "again.png", back)
    assert np.array_equal(load_rgba(tmp_path / "again.png"), back)


def test_tensor_convention_against_hand_computation():
    rgba = np.array([[[255, 128, 0, 255], [200, 100, 50, 128], [10, 20, 30, 0], [0, 0, 0, 255]]], np.uint8)
    t = torch.from_numpy(rgba.astype(np.float64) / 255.0)
    srgb = t[..., :3]
    linear = torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    expected = torch.cat([linear * t[..., 3:], t[..., 3:]], -1) * 2 - 1
    from tha.models.image import rgba_to_tensor

    assert torch.allclose(rgba_to_tensor(rgba, torch.float64).permute(1, 2, 0), expected, atol=1e-12)


def test_srgb_curves_are_inverse():
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-9)


def test_transparent_pixels_come_back_black_and_clear():
    image = -torch.ones(4, 2, 2)
    assert not tensor_to_rgba(image).any()


def test_rgb_png_is_refused(tmp_path):
    Image.new("RGB", (512, 512), "white").save(tmp_path / "rgb.png")
    with pytest.raises(ThaError, match="no alpha channel"):
        load_rgba(tmp_path / "rgb.png")


def test_not_a_png_and_unreadable(tmp_path):
    Image.new("RGBA", (512, 512)).save(tmp_path / "a.gif")
    (tmp_path / "fake.png").write_bytes(b"hello, not an image")
    truncated = tmp_path / "cut.png"
    Image.new("RGBA", (512, 512), (255, 0, 0, 255)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ThaError, match="not a PNG"):
        load_rgba(tmp_path / "a.gif")
    with pytest.raises(ThaError, match="not an image"):
        load_rgba(tmp_path / "fake.png")
    with pytest.raises(ThaError, match="cannot be read"):
        load_rgba(truncated)
    with pytest.raises(ThaError, match="does not exist"):
        load_rgba(tmp_path / "missing.png")


def test_other_sizes_are_centre_cropped_and_resized_with_a_warning(tmp_path):
    image = np.zeros((300, 400, 4), np.uint8)
    image[:, 50:350] = (255, 0, 0, 255)  # the centre square is opaque red, the sides clear
    Image.fromarray(image).save(tmp_path / "wide.png")
    with pytest.warns(UserWarning, match="400x300"):
        out = load_rgba(tmp_path / "wide.png")
    assert out.shape == (512, 512, 4)
    assert (out[..., 3] > 250).mean() > 0.99


def test_alpha_that_rounds_to_zero_is_written_clear():
    """Alpha below half a uint8 step: un-premultiplying would turn float noise into full colour
    (255,0,255,0 on one CPU, 0,0,0,0 on another); the written pixel is (0,0,0,0) on both paths."""
    from tha.models.image import rgba8

    straight = torch.tensor([[1.0, 0.4], [0.0, 0.4], [1.0, 0.4], [0.0015, 2.0 / 255]])  # 2 pixels
    premultiplied = torch.cat([straight[:3] * straight[3:], straight[3:]]) * 2 - 1
    image = premultiplied[:, None, :].expand(4, 3, 2).contiguous()
    for out in (tensor_to_rgba(image), rgba8(image.float()).numpy()):
        assert out[:, 0].tolist() == [[0, 0, 0, 0]] * 3
        assert out[0, 1, 3] == 2 and out[0, 1, :3].min() > 100  # visible: colour kept
