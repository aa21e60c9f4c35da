"""The headless pipeline and the ComfyUI graph (the nodes of the shipped workflow "Squeeze subject from one
reference", run in-process) give the same final latents on the same tiny weights: FLUX converted between the
diffusers and ComfyUI layouts, the same FLUX VAE, InternVL3 and DLA files."""

import numpy as np
import torch
from comfy_helpers import run_node
from helpers import random_image

from squeeze_core.mllm import InternVL3Encoder
from squeeze_core.pipeline import GenerateConfig, SqueezePipeline
from squeeze_core.weights import load_dla

CONFIG = GenerateConfig(prompt="a red toy on the beach", seed=5, steps=6, cfg=2.5, tau1=0.9, tau2=0.6, width=96, height=64, long_side=64)


def comfy_graph_latents(comfy, patcher, reference, config=CONFIG):
    """The ComfyUI graph of workflows/Squeeze subject from one reference.json, node by node -> final latents."""
    import comfy.sd
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux
    from comfy_server import flux_vae

    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader
    from squeeze_pack.nodes.reference_latents import SqueezeReferenceLatents
    from squeeze_pack.nodes.staged import staged_sample

    comfy_vae = comfy.sd.VAE(sd={k: v.clone() for k, v in flux_vae(seed=4).eval().state_dict().items()})
    image = torch.from_numpy(np.asarray(reference, dtype=np.float32) / 255.0)[None]
    mllm = SqueezeMLLMLoader.execute("tiny-internvl3", "float32", True).result[0]
    positive, prompt_only, _ = SqueezeDLAEncode.execute(mllm, "dla_tiny.safetensors", config.prompt, "pad", 4, image_1=image).result
    negative = SqueezeDLAEncode.execute(mllm, "dla_tiny.safetensors", "", "pad", 4).result[1]
    with torch.no_grad():
        middle = SqueezeReferenceLatents.execute(positive, comfy_vae, config.long_side, image).result[0]
        late = SqueezeReferenceLatents.execute(prompt_only, comfy_vae, config.long_side, image).result[0]
    model = run_node(ModelSamplingFlux, model=patcher, max_shift=1.15, base_shift=0.5, width=config.width, height=config.height)[0]
    latent = {"samples": torch.zeros(1, 16, config.height // 8, config.width // 8)}
    out, guider = staged_sample(model, config.seed, config.steps, config.cfg, "euler", "squeeze_cosine", positive, negative, latent,
                                positive_middle=middle, positive_late=late, tau1=config.tau1, tau2=config.tau2)
    assert {stage for _, stage in guider.phase_log} == {1, 2, 3}
    return out["samples"]


def headless_pipeline(squeeze_models, transformer):
    from comfy_server import flux_vae

    encoder = InternVL3Encoder.from_pretrained(squeeze_models / "mllm" / "tiny-internvl3", dtype=torch.float32)
    dla = load_dla(squeeze_models / "squeeze" / "dla_tiny.safetensors", mllm=encoder.info)
    return SqueezePipeline(encoder, dla, transformer, flux_vae(seed=4).eval())


def test_headless_pipeline_matches_the_comfyui_graph(comfy, squeeze_models):
    from test_flux_parity import shared_weights

    transformer, patcher = shared_weights(comfy)
    reference = random_image(120, 80, seed=9)
    expected = comfy_graph_latents(comfy, patcher, reference)
    headless, decoded = headless_pipeline(squeeze_models, transformer)(CONFIG, [reference], progress=False)
    torch.testing.assert_close(headless, expected, atol=1e-4, rtol=0)
    assert decoded.shape == (1, 64, 96, 3) and 0.0 <= float(decoded.min()) and float(decoded.max()) <= 1.0


def test_headless_pipeline_merges_the_lora_and_matches_comfyuis_lora_loader(comfy, squeeze_models, tmp_path):
    """The LoRA file through LoraLoaderModelOnly (ComfyUI merges it into the weights) and through the headless
    pipeline (load_comfyui_lora, then SqueezePipeline merges it before the first step) gives the same latents."""
    import folder_paths
    import nodes
    from test_flux_parity import shared_weights

    from squeeze_core.lora import flux_lora_config, load_comfyui_lora, save_comfyui_lora

    transformer, patcher = shared_weights(comfy)
    source, _ = shared_weights(comfy)
    source.add_adapter(flux_lora_config(rank=4))
    with torch.no_grad():
        for name, parameter in source.named_parameters():
            if ".lora_" in name:
                parameter.normal_(0, 0.05)
    (tmp_path / "loras").mkdir()
    save_comfyui_lora(source, tmp_path / "loras" / "random_lora.safetensors")
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"))
    reference = random_image(120, 80, seed=9)

    plain = headless_pipeline(squeeze_models, shared_weights(comfy)[0])(CONFIG, [reference], progress=False)[0]
    patched = run_node(nodes.LoraLoaderModelOnly, model=patcher, lora_name="random_lora.safetensors", strength_model=1.0)[0]
    expected = comfy_graph_latents(comfy, patched, reference)
    load_comfyui_lora(transformer, tmp_path / "loras" / "random_lora.safetensors")
    pipe = headless_pipeline(squeeze_models, transformer)
    assert not any(".lora_" in name for name, _ in pipe.transformer.named_parameters())  # merged, no adapter left
    headless = pipe(CONFIG, [reference], progress=False)[0]
    torch.testing.assert_close(headless, expected, atol=1e-4, rtol=0)
    assert (headless - plain).abs().max() > 1e-3  # ten times the tolerance: the LoRA changes the result, so the match means something
