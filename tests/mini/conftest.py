"""Mini-world fixtures: a random-weight copy of the embedded mini models (same configs, tokenizers and benchmark,
fresh random weights), the baseline the shipped weights are measured against."""

import shutil

import pytest
import torch

from squeeze_core.embedded import EmbeddedModels


def save_random_copy(models: EmbeddedModels, destination, seed: int = 0) -> EmbeddedModels:
    """Every model of `models` rebuilt from its config with random weights (seeded), saved where the same loaders
    read them; the tokenizers, judge and benchmark are copied as they are."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import AutoConfig, InternVLForConditionalGeneration

    from squeeze_core.dla import DualLayerAggregator
    from squeeze_core.lora import flux_lora_config, save_comfyui_lora
    from squeeze_core.weights import read_dla_metadata, save_dla

    copy = EmbeddedModels(destination)
    shutil.copytree(models.root, copy.root, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copyfile(models.judge, copy.judge)
    torch.manual_seed(seed)
    mllm = InternVLForConditionalGeneration(AutoConfig.from_pretrained(models.mllm, local_files_only=True))
    mllm.save_pretrained(copy.mllm)
    transformer = FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(models.transformer))
    transformer.save_pretrained(copy.transformer)
    AutoencoderKL.from_config(AutoencoderKL.load_config(models.vae)).save_pretrained(copy.vae)
    config, made_for = read_dla_metadata(models.dla)
    save_dla(DualLayerAggregator(config), copy.dla, made_for)
    transformer.add_adapter(flux_lora_config(rank=4, alpha=4, init_lora_weights=False))
    save_comfyui_lora(transformer, copy.lora)
    return copy


@pytest.fixture(scope="session")
def random_mini_models(tmp_path_factory):
    return save_random_copy(EmbeddedModels.packaged(), tmp_path_factory.mktemp("random") / "mini")
