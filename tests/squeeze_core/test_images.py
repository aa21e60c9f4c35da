import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_core import images as images_module
from squeeze_core.errors import SqueezeInputError
from squeeze_core.images import IMAGENET_MEAN_RGB, fit_to_tile, prepare_reference, to_pil, to_rgb


def test_grayscale_becomes_rgb_with_equal_channels():
    gray = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 251, "L")
    rgb = np.asarray(to_rgb(gray))
    assert rgb.shape == (64, 64, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert (rgb[..., 0] == np.asarray(gray)).all()


def test_transparent_pixels_take_the_pad_colour():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 255))
    rgba.paste((0, 255, 0, 0), (0, 0, 20, 40))  # left half fully transparent
    rgb = np.asarray(to_rgb(rgba))
    assert tuple(rgb[5, 5]) == IMAGENET_MEAN_RGB
    assert tuple(rgb[5, 30]) == (255, 0, 0)


def test_palette_with_transparency_is_composited():
    palette = Image.new("RGBA", (40, 40), (0, 0, 255, 0)).convert("P")
    palette.info["transparency"] = 0
    assert tuple(np.asarray(to_rgb(palette))[0, 0]) == IMAGENET_MEAN_RGB


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100], [32896, 65535]] * 20, dtype=np.uint16).repeat(20, axis=1)
    image = Image.fromarray(values)  # mode I;16
    assert image.mode.startswith("I")
    rgb = np.asarray(to_rgb(image))
    assert rgb[0, 0, 0] == 0 and rgb[0, 20, 0] == 100 and rgb[1, 0, 0] == 128 and rgb[1, 20, 0] == 255


def test_float_mode_image_is_rejected_with_advice():
    with pytest.raises(SqueezeInputError, match="32-bit float.*convert it to 8-bit RGB"):
        to_rgb(Image.new("F", (40, 40), 0.5))


def test_tiny_image_is_rejected_and_size_is_quoted():
    with pytest.raises(SqueezeInputError, match=r"reference image 2 of prompt 0 is 20x300 px.*at least 32 px"):
        prepare_reference(Image.new("RGB", (20, 300)), 112, name="reference image 2 of prompt 0")


def test_huge_image_is_rejected_over_the_pixel_limit(monkeypatch):
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(SqueezeInputError, match=r"200x100 px.*downscale it first"):
        prepare_reference(Image.new("RGB", (200, 100)), 112)


def test_large_image_is_downscaled_to_one_tile():
    big = Image.new("RGB", (3000, 2000), (10, 200, 30))
    tile = prepare_reference(big, 112)
    assert tile.size == (112, 112) and tile.mode == "RGB"
    assert tuple(np.asarray(tile)[56, 56]) == (10, 200, 30)


def test_pad_keeps_the_whole_image_and_fills_with_the_mean_colour():
    wide = Image.new("RGB", (200, 100), (255, 255, 255))
    tile = np.asarray(fit_to_tile(wide, 100, "pad"))
    assert tuple(tile[0, 50]) == IMAGENET_MEAN_RGB and tuple(tile[99, 50]) == IMAGENET_MEAN_RGB
    assert (tile[25:75] == 255).all()


def test_crop_and_stretch_fill_the_tile():
    wide = Image.new("RGB", (200, 100), (255, 255, 255))
    wide.paste((0, 0, 0), (0, 0, 50, 100))  # black band on the left quarter
    crop = np.asarray(fit_to_tile(wide, 100, "crop"))
    stretch = np.asarray(fit_to_tile(wide, 100, "stretch"))
    assert (crop == 255).all()  # the centre square misses the black band
    assert (stretch[:, :20] == 0).all() and (stretch[:, 30:] == 255).all()
    with pytest.raises(SqueezeInputError, match="aspect_mode='zoom'"):
        fit_to_tile(wide, 100, "zoom")


def test_float_tensor_matches_the_pil_path():
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8))
    tensor = torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0)
    assert np.array_equal(np.asarray(to_pil(tensor)), np.asarray(pil))
    assert np.array_equal(np.asarray(to_pil(tensor[None])), np.asarray(pil))  # ComfyUI (1, H, W, C)


@pytest.mark.parametrize(
    "value, message",
    [
        (torch.rand(2, 64, 64, 3), "must be split into single images"),
        (torch.rand(64, 64, 2), "1, 3 or 4 channels"),
        (torch.rand(64, 64, 3) * 255, "float images must be in"),
        (torch.full((64, 64, 3), float("nan")), "NaN"),
        ("dog.png", "pass a PIL image"),
    ],
)
def test_bad_tensor_inputs_are_rejected(value, message):
    with pytest.raises(SqueezeInputError, match=message):
        to_pil(value)


def test_a_cameras_exif_orientation_is_applied_as_comfyuis_load_image_does(tmp_path):
    """A portrait photo stored landscape with EXIF orientation 6 (rotate 90): opened upright, as the user sees it."""
    from squeeze_core.images import open_image

    stored = Image.new("RGB", (120, 80), (200, 30, 30))
    stored.paste((30, 30, 200), (0, 0, 60, 80))  # left half blue as stored: the top half once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    opened = open_image(tmp_path / "portrait.jpg")
    assert opened.size == (80, 120)
    top, bottom = opened.getpixel((40, 10)), opened.getpixel((40, 110))
    assert top[2] > 150 > top[0] and bottom[0] > 150 > bottom[2]
