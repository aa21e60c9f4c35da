"""One real ComfyUI server for the end-to-end tests, with tiny model files under the names the workflows use."""

import shutil
from pathlib import Path

import pytest
import torch
from comfy_server import ComfyServer, write_flux_lora, write_flux_transformer, write_flux_vae
from helpers import random_image

from squeeze_core.dla import DLAConfig, DualLayerAggregator
from squeeze_core.mllm import MLLMInfo
from squeeze_core.weights import save_dla

ROOT = Path(__file__).resolve().parents[2]


def cached(path: Path, write) -> Path:
    """Model files are deterministic: build once into .cache/test-models, link into each server's models dir."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        write(partial)
        partial.rename(path)
    return path


@pytest.fixture(scope="session")
def comfyui_server(comfyui_dir, tmp_path_factory, tiny_mllm_dir, other_mllm_dir):
    base = tmp_path_factory.mktemp("comfyui")
    models = base / "models"
    store = ROOT / ".cache" / "test-models"
    for folder, name, stored, writer in (
        ("diffusion_models", "flux1-dev.safetensors", "flux1-dev.safetensors", write_flux_transformer),
        # FLUX.1 Kontext dev is FLUX.1 dev's architecture: the same tiny transformer stands in for it
        ("diffusion_models", "flux1-kontext-dev.safetensors", "flux1-dev.safetensors", write_flux_transformer),
        ("loras", "squeeze_flux_lora.safetensors", "squeeze_flux_lora.safetensors", write_flux_lora),
        ("vae", "ae.safetensors", "ae.safetensors", write_flux_vae),
    ):
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / name).symlink_to(cached(store / stored, writer))
    shutil.copytree(tiny_mllm_dir, models / "mllm" / "InternVL3-8B-hf")
    shutil.copytree(other_mllm_dir, models / "mllm" / "InternVL3-1B-hf")
    torch.manual_seed(7)
    for name, layers, width, mllm in (("squeeze_dla", 6, 64, "InternVL3-8B-hf"), ("squeeze_dla_1b", 4, 48, "InternVL3-1B-hf")):
        dla = DualLayerAggregator(DLAConfig(num_layers=layers, hidden_size=width))
        save_dla(dla, models / "squeeze" / f"{name}.safetensors", MLLMInfo("internvl", layers, width, mllm))
    (base / "input").mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(("subject.png", "subject_side.png", "subject_back.png")):
        random_image(160 + 40 * seed, 120, seed=seed).save(base / "input" / name)
    server = ComfyServer.start(comfyui_dir, ROOT, base)
    yield server
    server.stop()
