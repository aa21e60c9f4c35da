"""The documented limits on user input, in one place: values past them would exhaust the machine or mean nothing.

    MAX_SEED           seeds are integers in [0, MAX_SEED] (torch.Generator takes any 64-bit seed; this range means
                       the same on every platform)
    max_image_side()   generated width / height in px: 4096, or $SQUEEZE_MAX_IMAGE_SIDE (FLUX.1-dev is trained to ~2 MP)
    MAX_CFG            real CFG scale and FLUX guidance: at most 100 (past ~20 the image saturates to black or noise)
    MAX_SEEDS          seeds per prompt in `squeeze eval` / `ablate` / `mini` scoring
    MAX_STEPS          denoising steps
"""

from __future__ import annotations

import os

MAX_SEED = 2**63 - 1
DEFAULT_MAX_IMAGE_SIDE = 4096
MAX_CFG = 100.0
MAX_SEEDS = 100
MAX_STEPS = 1000  # denoising steps
IMAGE_SIDE_VARIABLE = "SQUEEZE_MAX_IMAGE_SIDE"


def max_image_side() -> int:
    """DEFAULT_MAX_IMAGE_SIDE, or the positive integer in $SQUEEZE_MAX_IMAGE_SIDE (for a card with the memory)."""
    value = os.environ.get(IMAGE_SIDE_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_SIDE
    if not value.isdigit() or int(value) < 16:
        from .errors import SqueezeInputError

        raise SqueezeInputError(f"${IMAGE_SIDE_VARIABLE}={value!r} is not a whole number of pixels >= 16; unset it or give "
                                f"one (the default is {DEFAULT_MAX_IMAGE_SIDE}).")
    return int(value)
