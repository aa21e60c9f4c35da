"""Helpers shared by the tests (plain functions; fixtures live in conftest.py)."""

import numpy as np
from PIL import Image


def random_image(width=96, height=80, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").convert(mode)
