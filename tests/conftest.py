"""Shared fixtures: tiny random InternVL3 checkpoints written to disk and loaded back through the real loader."""

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_core.dla import DLAConfig, DualLayerAggregator
from squeeze_core.mllm import InternVL3Encoder
from squeeze_core.tiny import save_tiny_internvl3


@pytest.fixture(scope="session")
def tiny_mllm_dir(tmp_path_factory):
    return save_tiny_internvl3(tmp_path_factory.mktemp("mllm") / "tiny-internvl3", num_layers=6, hidden_size=64)


@pytest.fixture(scope="session")
def other_mllm_dir(tmp_path_factory):
    """A second InternVL3 of another depth and width, for mismatch tests."""
    return save_tiny_internvl3(tmp_path_factory.mktemp("mllm") / "tiny-internvl3-4x48", num_layers=4, hidden_size=48)


@pytest.fixture(scope="session")
def encoder(tiny_mllm_dir):
    return InternVL3Encoder.from_pretrained(tiny_mllm_dir, dtype=torch.float32)


@pytest.fixture
def dla(encoder):
    torch.manual_seed(1)
    return DualLayerAggregator(DLAConfig.for_mllm(encoder.info))


def random_image(width=96, height=80, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").convert(mode)


@pytest.fixture
def images():
    return [random_image(96 + 8 * i, 80 + 4 * i, seed=i) for i in range(4)]
