"""What `squeeze train` exports loads in ComfyUI and computes what the trained model computes: the LoRA through the
stock LoraLoaderModelOnly, the DLA through the Squeeze DLA Encode node."""

import logging
import shutil

import numpy as np
import torch
from comfy_helpers import comfy_flux_from_diffusers, run_node
from helpers import random_image

from squeeze_core.conditioning import encode_for_phases
from squeeze_core.flux import flux_velocity
from squeeze_core.testing import tiny_flux_transformer, tiny_flux_vae


def test_the_training_export_loads_in_comfyui_and_matches_the_trained_model(comfy, squeeze_models, tmp_path, tiny_mllm_dir, caplog):
    import folder_paths
    import nodes
    from accelerate.state import AcceleratorState

    from squeeze_core.testing import write_demo_dataset
    from squeeze_core.train.config import TrainConfig
    from squeeze_core.train.trainer import Trainer
    from squeeze_pack.nodes.dla_encode import SqueezeDLAEncode
    from squeeze_pack.nodes.mllm import SqueezeMLLMLoader

    AcceleratorState._reset_state(reset_partial_state=True)
    tiny_flux_transformer(weight_std=None).save_pretrained(tmp_path / "transformer")  # the base ComfyUI gets below
    tiny_flux_vae(0).save_pretrained(tmp_path / "vae")
    config = TrainConfig(
        mllm=str(tiny_mllm_dir), transformer=str(tmp_path / "transformer"), vae=str(tmp_path / "vae"),
        manifest=str(write_demo_dataset(tmp_path / "pairs")), output_dir=str(tmp_path / "run"),
        resolution=64, bucket_step=16, reference_long_side=64, lora_rank=4, dla_attn_dim=32, dla_num_heads=4,
        base_dtype="float32", mixed_precision="no", gradient_checkpointing=False, num_workers=0, learning_rate=1e-2,
        max_steps=5, checkpoint_every=5,
    )
    trainer = Trainer(config)
    trainer.run()
    trained_dla, trained_flux = trainer.models.dla.eval(), trainer.models.transformer.eval()
    assert any(float(m.lora_B["default"].weight.detach().abs().max()) > 0 for m in trained_flux.modules() if hasattr(m, "lora_B"))

    (tmp_path / "loras").mkdir()
    shutil.copy(tmp_path / "run" / "squeeze_flux_lora.safetensors", tmp_path / "loras" / "trained_lora.safetensors")
    shutil.copy(tmp_path / "run" / "squeeze_dla.safetensors", squeeze_models / "squeeze" / "trained_dla.safetensors")
    folder_paths.add_model_folder_path("loras", str(tmp_path / "loras"))

    # ComfyUI's FLUX with the base weights training started from (ComfyUI's own diffusers -> ComfyUI conversion)
    patcher = comfy_flux_from_diffusers(tiny_flux_transformer(weight_std=None))
    with caplog.at_level(logging.WARNING):
        patched = run_node(nodes.LoraLoaderModelOnly, model=patcher, lora_name="trained_lora.safetensors", strength_model=1.0)[0]
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]

    # the DLA node with the exported file == the trained DLA
    reference = random_image(96, 80, seed=3)
    image = torch.from_numpy(np.asarray(reference, dtype=np.float32) / 255.0)[None]
    prompt = "a photo of the red toy ball in the snow"
    mllm = SqueezeMLLMLoader.execute("tiny-internvl3", "float32", True).result[0]
    positive = SqueezeDLAEncode.execute(mllm, "trained_dla.safetensors", prompt, "pad", 4, image_1=image).result[0]
    expected = encode_for_phases(trainer.models.encoder, trained_dla, prompt, [image[0]]).first
    torch.testing.assert_close(positive[0][0], expected.context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(positive[0][1]["pooled_output"], expected.pooled, atol=1e-5, rtol=1e-5)

    # one FLUX call with a reference latent: ComfyUI's LoRA-patched FLUX == the trained peft FLUX
    g = torch.Generator().manual_seed(0)
    latent, ref = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 16, 6, 8, generator=g)
    context, pooled = expected.context.detach(), expected.pooled.detach()
    with torch.no_grad():
        trained = flux_velocity(trained_flux, latent, 0.6, context, pooled, 3.5, [ref])
        untrained = flux_velocity(tiny_flux_transformer(weight_std=None).eval(), latent, 0.6, context, pooled, 3.5, [ref])
        patched.patch_model()
        try:
            comfy_out = patched.model.diffusion_model(latent, torch.tensor([0.6]), context, y=pooled, guidance=torch.tensor([3.5]),
                                                      ref_latents=[ref], ref_latents_method="uxo")
        finally:
            patched.unpatch_model()
    torch.testing.assert_close(comfy_out, trained, atol=1e-4, rtol=1e-4)
    assert (trained - untrained).abs().max() > 1e-3  # the LoRA changed the output, so the match above means something
