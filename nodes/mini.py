"""The embedded miniature in the canvas: its models and its held-out references, with nothing to download or copy.

`Squeeze Mini Models` gives the shipped mini FLUX (ComfyUI's own Flux at the miniature's size, the Squeeze LoRA
applied as `LoraLoaderModelOnly` applies one), the mini VAE as a `VAE`, and the mini InternVL3 as the pack's MLLM;
its DLA is the `dla_name` choice EMBEDDED_DLA of `Squeeze DLA Encode`. `Squeeze Mini Reference` gives a held-out
identity's reference render and its benchmark prompts. Every file is checked against the package's MANIFEST.json
when the prompt is queued, so a changed or missing file is a validation error, not a crash mid-run.
"""

from __future__ import annotations

import json
import logging

import comfy.sd
import comfy.utils
import torch
from comfy_api.latest import io
from safetensors.torch import load_file

from ..squeeze_core.embedded import EmbeddedModels
from ..squeeze_core.errors import SqueezeError
from .comfy_models import DiffusersVAE, flux_model_patcher
from .mllm import SqueezeMLLMType, load_mllm

logger = logging.getLogger("squeeze.nodes")

MODEL_FILES = ("flux/transformer/", "vae/", "mllm/", "squeeze/squeeze_flux_lora.safetensors")
BENCHMARK_FILES = ("benchmark/",)
REFERENCES_PER_IDENTITY = 3  # the held-out benchmark renders each identity in three scenes
PROMPTS_PER_IDENTITY = 25


def embedded_error(under: tuple[str, ...]) -> str | None:
    """None when the embedded files under these folders match the manifest, else the message for the node."""
    try:
        EmbeddedModels.packaged().verify(under)
    except SqueezeError as error:
        return str(error)
    return None


def heldout_count() -> int:
    """Held-out identities in the shipped benchmark (0 when its index is missing: validation then says so)."""
    try:
        return EmbeddedModels.packaged().subjects
    except SqueezeError:
        return 0


def load_mini_models(lora_strength: float = 1.0):
    """-> (MODEL, VAE, MLLM) of the embedded miniature, float32 (a few MB: precision costs nothing here)."""
    from diffusers import AutoencoderKL

    models = EmbeddedModels.packaged()
    progress = comfy.utils.ProgressBar(4)
    config = json.loads((models.transformer / "config.json").read_text(encoding="utf-8"))
    state = load_file(str(models.transformer / "diffusion_pytorch_model.safetensors"))
    model = flux_model_patcher(state, num_heads=config["num_attention_heads"], axes_dim=config["axes_dims_rope"])
    progress.update(1)
    if lora_strength != 0:
        lora = comfy.utils.load_torch_file(str(models.lora), safe_load=True)
        model, _ = comfy.sd.load_lora_for_models(model, None, lora, lora_strength, 0)
    progress.update(1)
    autoencoder = AutoencoderKL.from_pretrained(models.vae, local_files_only=True, use_safetensors=True, torch_dtype=torch.float32)
    vae = DiffusersVAE(autoencoder)
    progress.update(1)
    mllm = load_mllm(str(models.mllm), "float32")
    progress.update(1)
    logger.info("loaded the embedded mini models from %s (LoRA strength %s)", models.root, lora_strength)
    return model, vae, mllm


def mini_reference(identity: int, reference: int, prompt_index: int):
    """-> ((1, 64, 64, 3) IMAGE in [0, 1], the identity's benchmark prompt, the words that describe the identity)."""
    from ..squeeze_core.images import open_image
    from ..squeeze_core.pipeline import reference_pixels

    subject = EmbeddedModels.packaged().subject(identity)
    path = subject.reference(reference)
    image = reference_pixels(open_image(path, name=f"mini benchmark reference {path.name}"))
    return image, subject.prompt(prompt_index), subject.words


class SqueezeMiniModels(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SqueezeMiniModels",
            display_name="Squeeze Mini Models (embedded)",
            category="Squeeze",
            description="The miniature FLUX (with its Squeeze LoRA), VAE and InternVL3 that ship inside the pack: "
                        "a complete Squeeze to try on a CPU with no download. Pick the embedded DLA in Squeeze DLA Encode.",
            inputs=[
                io.Float.Input("lora_strength", default=1.0, min=-2.0, max=2.0, step=0.05,
                               tooltip="Strength of the embedded Squeeze LoRA on the mini FLUX; 0 gives the base model."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The mini FLUX (ComfyUI's Flux, 64 px) with the Squeeze LoRA."),
                io.Vae.Output(display_name="vae", tooltip="The mini VAE (16 latent channels, 8x downscale, like FLUX's)."),
                SqueezeMLLMType.Output(display_name="mllm", tooltip="The mini InternVL3, for Squeeze DLA Encode."),
            ],
        )

    @classmethod
    def validate_inputs(cls, lora_strength):
        return embedded_error(MODEL_FILES) or True

    @classmethod
    def execute(cls, lora_strength) -> io.NodeOutput:
        return io.NodeOutput(*load_mini_models(lora_strength))


class SqueezeMiniReference(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        last = max(heldout_count() - 1, 0)
        return io.Schema(
            node_id="SqueezeMiniReference",
            display_name="Squeeze Mini Reference (embedded)",
            category="Squeeze",
            description="A reference render of one of the mini benchmark's held-out subjects (never seen in training), "
                        "and one of its benchmark prompts. For your own pictures use Load Image.",
            inputs=[
                io.Int.Input("identity", default=0, min=0, max=last,
                             tooltip=f"Which held-out subject (0 to {last}); each has its own class, colours, pattern and mark."),
                io.Int.Input("reference", default=0, min=0, max=REFERENCES_PER_IDENTITY - 1,
                             tooltip="Which of the subject's three reference renders (other scenes of the same subject)."),
                io.Int.Input("prompt_index", default=0, min=0, max=PROMPTS_PER_IDENTITY - 1,
                             tooltip="Which of the subject's 25 benchmark prompts the prompt output gives."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The reference render, 64 x 64."),
                io.String.Output(display_name="prompt", tooltip="The benchmark prompt (the mini models know the mini world's words)."),
                io.String.Output(display_name="subject", tooltip="The subject in words: what the reference shows."),
            ],
        )

    @classmethod
    def validate_inputs(cls, identity, reference, prompt_index):
        error = embedded_error(BENCHMARK_FILES)
        if error:
            return error
        count = heldout_count()
        if not 0 <= identity < count:
            return f"identity={identity} is out of range: the mini benchmark has held-out identities 0 to {count - 1}."
        if not 0 <= reference < REFERENCES_PER_IDENTITY:
            return f"reference={reference} is out of range: each identity has references 0 to {REFERENCES_PER_IDENTITY - 1}."
        if not 0 <= prompt_index < PROMPTS_PER_IDENTITY:
            return f"prompt_index={prompt_index} is out of range: each identity has prompts 0 to {PROMPTS_PER_IDENTITY - 1}."
        return True

    @classmethod
    def execute(cls, identity, reference, prompt_index) -> io.NodeOutput:
        return io.NodeOutput(*mini_reference(identity, reference, prompt_index))
