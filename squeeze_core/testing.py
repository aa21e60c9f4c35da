"""Test and benchmark fixtures: tiny random-weight stand-ins for the real models and a small synthetic pair set.
No `squeeze` verb and no node uses this module (their embedded default is squeeze_core/embedded).

`save_tiny_internvl3(dir)` writes a complete InternVL3 "-hf" checkpoint (config, safetensors weights, a byte-level
tokenizer with InternVL's special tokens, the image processor config) that goes through the very same loader as
a real one; `tiny_flux_transformer()`, `tiny_flux_vae()`, `save_tiny_dino/clip(dir)` likewise. All are built from
configs with a fixed seed: no download, same weights every time. `write_demo_dataset(dir)` writes a training manifest
of coloured toys: each reference alone on a plain background, each target in a scene of another size and aspect
ratio, with a prompt that names both.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from .mllm import SPECIAL_TOKENS


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (no merges: one token per byte) with InternVL3's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>")


def tiny_internvl3_config(vocab_size: int, image_token_id: int, num_layers: int = 6, hidden_size: int = 64, image_size: int = 112):
    from transformers import InternVLConfig

    patch = 14
    return InternVLConfig(
        vision_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            image_size=image_size, patch_size=patch,
        ),
        text_config=dict(
            model_type="qwen2", hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=2 * hidden_size, vocab_size=vocab_size,
            max_position_embeddings=4096, tie_word_embeddings=True,
        ),
        image_token_id=image_token_id,
        image_seq_length=(image_size // patch) ** 2 // 4,
        downsample_ratio=0.5,
    )


def save_tiny_internvl3(path, num_layers: int = 6, hidden_size: int = 64, image_size: int = 112, seed: int = 0) -> Path:
    """Write a tiny random InternVL3 "-hf" checkpoint to `path` (created) and return it."""
    from transformers import InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    config = tiny_internvl3_config(
        len(tokenizer), tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), num_layers, hidden_size, image_size
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config).to(torch.float32)
        # HF initialises some norms/biases to constants; perturb everything so tests see distinct layers.
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size}, crop_to_patches=False).save_pretrained(path)
    return path


def demo_reference_image(width: int = 320, height: int = 240) -> Image.Image:
    """A small synthetic 'subject' (a red toy on a blue floor), non-square so the letterboxing shows."""
    image = Image.new("RGB", (width, height), (180, 200, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, int(height * 0.7), width, height), fill=(60, 80, 160))
    cx, cy, r = width // 2, int(height * 0.5), min(width, height) // 4
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(200, 40, 40), outline=(90, 10, 10), width=3)
    draw.ellipse((cx - r // 3, cy - r // 2, cx + r // 6, cy - r // 6), fill=(250, 240, 240))
    draw.rectangle((cx - r // 2, cy + r - 4, cx + r // 2, cy + r + r // 2), fill=(240, 200, 40))
    return image


TINY_FLUX = dict(  # FLUX's layout at toy width: 2 heads x 32, one double and one single block
    patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=2,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(4, 14, 14),
)


def tiny_flux_transformer(seed: int = 0, weight_std: float | None = 0.05):
    """A diffusers FluxTransformer2DModel with FLUX's interface (4096 context, 768 pooled, 16 latent channels).

    weight_std: every weight drawn from N(0, std), so no layer is trivial (what parity checks want); None keeps
    diffusers' own initialisation, whose residual paths let an attention-only LoRA fit a target (what training wants).
    """
    from diffusers import FluxTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(**TINY_FLUX)
        if weight_std is not None:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.normal_(0, weight_std)
    return model.eval()


def tiny_flux_vae(seed: int = 0, blocks: int = 4):
    """An AutoencoderKL with the FLUX VAE's interface (16 latent channels, 8x downsampling) at toy width; `blocks=3`
    halves the image twice instead (4 px per latent cell), as a miniature VAE may."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32,) * blocks, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks, layers_per_block=1,
            use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159,
        )
    return vae.eval()


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def save_tiny_dino(path, seed: int = 0) -> Path:
    """A tiny random ViT in facebook/dino-vits16's transformers format and preprocessing (224 x 224, ImageNet stats)."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=224, patch_size=16)
        ViTModel(config, add_pooling_layer=False).save_pretrained(path, safe_serialization=True)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(path)
    return path


def save_tiny_clip(path, seed: int = 5) -> Path:
    """A tiny random CLIP in openai/clip-vit-base-patch32's transformers format and image preprocessing. Seed 5:
    its image-text cosines on DreamBench fall on both sides of 0 (seed 0 puts nearly all below, so CLIP-T would be 0)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    bos, eos = "<|im_start|>", "<|im_end|>"
    # CLIP pools the text at its end-of-text token, so every text must end with one (as CLIP's tokenizer does)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos)), (eos, tokenizer.convert_tokens_to_ids(eos))]
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = CLIPConfig(
            text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=len(tokenizer),
                             max_position_embeddings=77, eos_token_id=tokenizer.convert_tokens_to_ids(eos),
                             bos_token_id=tokenizer.convert_tokens_to_ids(bos), pad_token_id=tokenizer.pad_token_id),
            vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=224,
                               patch_size=32),
            projection_dim=16,
        )
        CLIPModel(config).save_pretrained(path, safe_serialization=True)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(path)
    return path


COLOURS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40)}
SCENES = {"beach": ((240, 220, 170), (90, 160, 220)), "forest": ((50, 110, 50), (140, 190, 140)),
          "snow": ((245, 245, 250), (170, 190, 210)), "city": ((90, 90, 100), (200, 180, 160))}
SIZES = [(96, 96), (128, 64), (64, 128), (112, 80)]


def draw_toy(draw: ImageDraw.ImageDraw, box, colour, shape: str) -> None:
    x0, y0, x1, y1 = box
    if shape == "ball":
        draw.ellipse(box, fill=colour, outline=(20, 20, 20), width=2)
    else:
        draw.rectangle(box, fill=colour, outline=(20, 20, 20), width=2)
    cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, max(2, (x1 - x0) // 6)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 250, 250))


def subject_image(colour, shape: str, size, scene=None, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    width, height = size
    ground, sky = SCENES[scene] if scene else ((235, 235, 235), (235, 235, 235))
    image = Image.new("RGB", size, sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, int(height * 0.6), width, height), fill=ground)
    side = min(width, height) // 2
    x0 = rng.randint(0, width - side) if scene else (width - side) // 2
    y0 = rng.randint(0, height - side) if scene else (height - side) // 2
    draw_toy(draw, (x0, y0, x0 + side, y0 + side), colour, shape)
    return image


def write_demo_dataset(folder, pairs: int = 8, seed: int = 0) -> Path:
    """Write `pairs` samples (PNG files + manifest.jsonl) into `folder`; returns the manifest path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for index in range(pairs):
        colour = list(COLOURS)[index % len(COLOURS)]
        shape = ("ball", "box")[(index // len(COLOURS)) % 2]
        scene = rng.choice(list(SCENES))
        size = SIZES[index % len(SIZES)]
        reference, target = f"{index:03d}_ref.png", f"{index:03d}_target.png"
        subject_image(COLOURS[colour], shape, (80, 80), seed=index).save(folder / reference)
        subject_image(COLOURS[colour], shape, size, scene, seed=index).save(folder / target)
        lines.append({"references": [reference], "target": target, "prompt": f"a photo of the {colour} toy {shape} in the {scene}"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest
