"""Shared fixtures: tiny random InternVL3 checkpoints written to disk and loaded back through the real loader."""

import pytest
import torch
from helpers import random_image

from squeeze_core.dla import DLAConfig, DualLayerAggregator
from squeeze_core.mllm import InternVL3Encoder
from squeeze_core.testing import save_tiny_internvl3


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


@pytest.fixture
def images():
    return [random_image(96 + 8 * i, 80 + 4 * i, seed=i) for i in range(4)]


@pytest.fixture(scope="session")
def comfyui_dir():
    """ComfyUI for the node tests: $COMFYUI_PATH, else 0.3.75 unpacked once into .cache/ (see comfy_server.py)."""
    from pathlib import Path

    from comfy_server import provision_comfyui

    return provision_comfyui(Path(__file__).resolve().parents[1] / ".cache")
