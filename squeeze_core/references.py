"""Reference images for the VAE branch: the size they are encoded at, shared by the ComfyUI node and the headless path.

Each reference is resized (aspect ratio kept) so its long side is `long_side` (default 512), then both sides are
rounded to multiples of 16 (the FLUX VAE downsamples by 8 and the transformer packs 2x2 latent patches), so its
latent tokens tile exactly. Images arrive as (B, H, W, C) float tensors in [0, 1] (ComfyUI's IMAGE layout); every
image of the batch is one reference. Alpha channels are dropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import SqueezeInputError
from .settings import (  # noqa: F401 (re-exported)
    DEFAULT_LONG_SIDE,
    LATENT_MULTIPLE,
    MAX_LONG_SIDE,
    MIN_IMAGE_SIDE,
    MIN_LONG_SIDE,
    check_long_side,
)


def reference_size(height: int, width: int, long_side: int = DEFAULT_LONG_SIDE) -> tuple[int, int]:
    """(height, width) of the resized reference: long side ~ long_side, both multiples of 16, at least 16."""
    check_long_side(long_side)
    scale = long_side / max(height, width)

    def snap(side: int) -> int:
        return max(LATENT_MULTIPLE, int(round(side * scale / LATENT_MULTIPLE)) * LATENT_MULTIPLE)

    return snap(height), snap(width)


def check_image_batch(images, name: str = "image") -> torch.Tensor:
    """Validate a ComfyUI IMAGE-like tensor (B, H, W, C) and return its RGB channels."""
    if isinstance(images, (list, tuple)):
        sizes = sorted({tuple(i.shape[-3:-1]) for i in images if isinstance(i, torch.Tensor)})
        raise SqueezeInputError(
            f"{name} is a list of {len(images)} images (sizes {sizes}), not one image batch; an image batch must share "
            "one size. Connect references of different sizes to separate image inputs (image_1, image_2, ...)."
        )
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise SqueezeInputError(f"{name} must be an image batch (batch, height, width, channels); got {shape}.")
    if images.shape[-1] not in (1, 3, 4):
        raise SqueezeInputError(f"{name} has {images.shape[-1]} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA).")
    if images.shape[0] == 0:
        raise SqueezeInputError(f"{name} is an empty batch.")
    if min(images.shape[1:3]) < MIN_IMAGE_SIDE:
        raise SqueezeInputError(f"{name} is {images.shape[2]}x{images.shape[1]} px; references need at least {MIN_IMAGE_SIDE} px "
                                "on the short side (the same limit as squeeze_core.images).")
    if images.shape[-1] == 1:
        return images.expand(-1, -1, -1, 3)
    return images[..., :3]


def resize_reference(image: torch.Tensor, long_side: int = DEFAULT_LONG_SIDE) -> torch.Tensor:
    """(1, H, W, C) in [0, 1] -> (1, h, w, 3) resized for the VAE (bicubic, antialiased, clamped to [0, 1])."""
    image = check_image_batch(image)
    height, width = reference_size(image.shape[1], image.shape[2], long_side)
    resized = F.interpolate(
        image.movedim(-1, 1).float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return resized.clamp(0.0, 1.0).movedim(1, -1)
