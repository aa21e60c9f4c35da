"""Reference images: validate, convert and fit them into one square MLLM tile.

InternVL3 sees each reference as a single 448 px tile (no dynamic tiling, so every reference costs the same 256
tokens). Non-square images are fitted to the square by `aspect_mode`:

- ``"pad"`` (default): letterbox. The whole subject stays visible and undistorted; the bars are filled with the
  ImageNet mean colour, which InternVL's normalisation maps to zero, so they carry as little signal as possible.
- ``"crop"``: centre crop to a square; fills the tile but can cut the subject.
- ``"stretch"``: plain resize; keeps everything but distorts proportions.

Accepted inputs: a PIL image in any common mode, or an ``(H, W, C)`` tensor / array with C in {1, 3, 4}
(float in [0, 1] as ComfyUI's IMAGE, or uint8). Grayscale, palette, CMYK and 16-bit images are converted to 8-bit
RGB and transparent ones are composited onto the pad colour (both logged). Images smaller than `MIN_IMAGE_SIDE`
on their short side, larger than `MAX_IMAGE_PIXELS`, or in modes that have no unambiguous RGB reading (32-bit
float) are rejected with an error that says what to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import SqueezeInputError
from .settings import ASPECT_MODES, MIN_IMAGE_SIDE  # noqa: F401 (re-exported)

logger = logging.getLogger("squeeze.images")

MAX_IMAGE_PIXELS = 1 << 28  # 268 MP; larger images would need gigabytes just to decode
IMAGENET_MEAN_RGB = (124, 116, 104)  # InternVL's normalisation mean * 255: pads become zeros after normalising

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_DIRECT_RGB_MODES = ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise SqueezeInputError(
            f"{name} has shape {tuple(array.shape)}; expected (height, width, channels) with 1, 3 or 4 channels "
            "(a ComfyUI IMAGE batch must be split into single images first)."
        )
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise SqueezeInputError(f"{name} contains NaN or infinite values; pass an image with values in [0, 1].")
        # ComfyUI images may overshoot [0, 1] by rounding; anything further off is not an image in that range.
        if array.min() < -0.01 or array.max() > 1.01:
            raise SqueezeInputError(
                f"{name} has float values in [{array.min():.3g}, {array.max():.3g}]; float images must be in [0, 1]."
            )
        pixels = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise SqueezeInputError(f"{name} has dtype {array.dtype}; pass uint8 or float in [0, 1].")
    channels = pixels.shape[-1]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    return Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode=mode)


def to_pil(image, name: str = "reference image") -> Image.Image:
    """Any accepted image input -> a PIL image (not yet converted to RGB)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        return _from_array(image.detach().to("cpu", torch.float32 if image.is_floating_point() else None).numpy(), name)
    if isinstance(image, np.ndarray):
        return _from_array(image, name)
    raise SqueezeInputError(f"{name} is a {type(image).__name__}; pass a PIL image, a tensor or a numpy array.")


def to_image_batch(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> (1, H, W, 3) float in [0, 1]: ComfyUI's IMAGE, as its LoadImage gives it."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def to_rgb(image: Image.Image, name: str = "reference image", background=IMAGENET_MEAN_RGB) -> Image.Image:
    """Convert a PIL image of any supported mode to 8-bit RGB, saying what was done."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise SqueezeInputError(
                f"{name} is a 32-bit integer image with values in [{values.min()}, {values.max()}]; "
                "convert it to 8- or 16-bit first."
            )
        # 16-bit data: scale to 8 bit instead of PIL's clipping, which would turn most images white.
        scale = 257.0 if values.max() > 255 else 1.0
        gray = np.round(values / scale).astype(np.uint8)
        logger.info("%s: converted 16-bit grayscale (%s) to 8-bit RGB", name, mode)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        raise SqueezeInputError(
            f"{name} is a 32-bit float image (PIL mode 'F') whose value range is ambiguous; "
            "convert it to 8-bit RGB, or pass a float tensor with values in [0, 1]."
        )
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        logger.info("%s: composited transparent %s image onto RGB%s", name, mode, tuple(background))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode in _DIRECT_RGB_MODES:
        logger.info("%s: converted %s image to RGB", name, mode)
        return image.convert("RGB")
    raise SqueezeInputError(f"{name} has PIL mode {mode!r}, which Squeeze cannot read; save it as an RGB PNG or JPEG.")


def check_size(image: Image.Image, name: str = "reference image") -> None:
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise SqueezeInputError(
            f"{name} is {width}x{height} px; references need at least {MIN_IMAGE_SIDE} px on the short side. "
            "Use a larger crop of the subject."
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise SqueezeInputError(
            f"{name} is {width}x{height} px ({width * height / 1e6:.0f} MP), over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP "
            "limit; downscale it first (it is shrunk to one tile anyway)."
        )


def fit_to_tile(
    image: Image.Image, tile_size: int, aspect_mode: str = "pad", pad_color=IMAGENET_MEAN_RGB
) -> Image.Image:
    """An RGB image -> a `tile_size` square RGB image, fitted by `aspect_mode` (see the module docstring)."""
    if aspect_mode not in ASPECT_MODES:
        raise SqueezeInputError(f"aspect_mode={aspect_mode!r} is not one of {ASPECT_MODES}.")
    width, height = image.size
    # Huge inputs: shrink by an integer factor first (a cheap box filter) so the bicubic resize stays fast.
    factor = min(width, height) // (2 * tile_size) if aspect_mode == "crop" else max(width, height) // (2 * tile_size)
    if factor >= 2:
        logger.debug("downscaling a %dx%d reference by %d before the tile resize", width, height, factor)
        image = image.reduce(factor)
        width, height = image.size
    if aspect_mode == "stretch":
        return image.resize((tile_size, tile_size), Image.Resampling.BICUBIC)
    if aspect_mode == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return image.resize((tile_size, tile_size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    scale = tile_size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = Image.new("RGB", (tile_size, tile_size), tuple(pad_color))
    canvas.paste(image.resize((new_w, new_h), Image.Resampling.BICUBIC), ((tile_size - new_w) // 2, (tile_size - new_h) // 2))
    return canvas


def prepare_reference(
    image, tile_size: int, aspect_mode: str = "pad", name: str = "reference image", pad_color=IMAGENET_MEAN_RGB
) -> Image.Image:
    """Validate one reference and return it as an RGB `tile_size` square, ready for the image processor."""
    pil = to_pil(image, name)
    check_size(pil, name)
    rgb = to_rgb(pil, name, background=pad_color)
    return fit_to_tile(rgb, tile_size, aspect_mode, pad_color)


def open_image(path, name: str = "image") -> Image.Image:
    """The one way Squeeze opens an image file: a loaded PIL image (any mode), or an error naming `name`.

    The pixel limit enforced is MAX_IMAGE_PIXELS, read from the header before anything is decoded; Pillow's own
    decompression-bomb guard (which fires at a lower, different size) is off for that one open."""
    path = Path(path)
    if not path.exists():
        raise SqueezeInputError(f"{name} '{path}' does not exist.")
    if not path.is_file():
        raise SqueezeInputError(f"{name} '{path}' is a directory, not an image file.")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise SqueezeInputError(
                    f"{name} '{path}' is {image.width}x{image.height} px ({image.width * image.height / 1e6:.0f} MP), "
                    f"over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit; downscale it first."
                )
            image.load()
            # a camera's EXIF orientation, applied as ComfyUI's LoadImage applies it: the picture as the user sees it
            return ImageOps.exif_transpose(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # UnidentifiedImageError is an OSError
        if isinstance(error, SqueezeInputError):
            raise
        raise SqueezeInputError(f"{name} '{path}' could not be read as an image ({error}).") from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def save_png(image, path) -> None:
    """(1, H, W, 3) in [0, 1] -> PNG, atomically."""
    from .files import atomic_write

    picture = Image.fromarray((image[0].clamp(0, 1).numpy() * 255.0).round().astype("uint8"))
    atomic_write(path, lambda temporary: picture.save(temporary, format="PNG"))
