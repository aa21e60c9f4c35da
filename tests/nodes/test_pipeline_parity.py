"""The headless pipeline and the ComfyUI graph (the shipped squeeze_subject workflow's nodes, run in-process) give
the same final latents on the same tiny weights: FLUX converted between the diffusers and ComfyUI layouts, the same
FLUX VAE, InternVL3 and DLA files."""

import numpy as np
import torch
from comfy_helpers import run_node
from helpers import random_image

from squeeze_core.mllm import InternVL3Encoder
from squeeze_core.pipeline import GenerateConfig, SqueezePipeline
from squeeze_core.weights import load_dla


def test_headless_pipeline_matches_the_comfyui_graph(comfy, squeeze_models):
    import comfy.sd
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux
    from comfy_server import flux_vae
    from test_flux_parity import shared_weights

    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader
    from squeeze_pack.nodes.reference_latents import SqueezeReferenceLatents
    from squeeze_pack.nodes.staged import staged_sample

    transformer, patcher = shared_weights(comfy)
    vae = flux_vae(seed=4).eval()
    comfy_vae = comfy.sd.VAE(sd={k: v.clone() for k, v in vae.state_dict().items()})
    reference = random_image(120, 80, seed=9)
    config = GenerateConfig(prompt="a red toy on the beach", seed=5, steps=6, cfg=2.5, tau1=0.9, tau2=0.6, width=96, height=64, long_side=64)

    # the ComfyUI graph of workflows/squeeze_subject.json, node by node
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
    assert {stage for _, stage in guider.stage_log} == {1, 2, 3}

    encoder = InternVL3Encoder.from_pretrained(squeeze_models / "mllm" / "tiny-internvl3", dtype=torch.float32)
    dla = load_dla(squeeze_models / "squeeze" / "dla_tiny.safetensors", mllm=encoder.info)
    headless, decoded = SqueezePipeline(encoder, dla, transformer, vae)(config, [reference], progress=False)
    torch.testing.assert_close(headless, out["samples"], atol=1e-4, rtol=0)
    assert decoded.shape == (1, 64, 96, 3) and 0.0 <= float(decoded.min()) and float(decoded.max()) <= 1.0
