"""InternVL3 as a joint prompt + reference-image encoder that returns every decoder layer.

Usage::

    encoder = InternVL3Encoder.from_pretrained("models/mllm/InternVL3-8B-hf", dtype=torch.bfloat16, device="cuda")
    out = encoder.encode(["a dog on the beach"], [[Image.open("dog.png")]])   # denoising phases 1-2: prompt + references
    out = encoder.encode(["a dog on the beach"])                                # phase 3: prompt only
    out.hidden_states   # (layers, batch, tokens, hidden): the output of every decoder layer
    out.token_types     # (batch, tokens): TokenType.TEXT / IMAGE / TEMPLATE / PAD

The checkpoint is InternVL3 in the transformers "-hf" layout (`InternVLForConditionalGeneration`, any size from 1B
to 78B: layer count and width are read from its config). Only safetensors weights are loaded, never from the network.

One chat turn per prompt, written out here rather than taken from the checkpoint's chat template so that the token
types are exact (ChatML, as InternVL3 was trained with)::

    <|im_start|>system\\n{system_prompt}<|im_end|>\\n          (only when a system prompt is set)
    <|im_start|>user\\n
    [Image-i: ]<img><IMG_CONTEXT> x tokens_per_image</img>\\n   (per reference; the label only when there are several)
    {prompt}<|im_end|>\\n<|im_start|>assistant\\n

The prompt's own tokens are TEXT, the `<IMG_CONTEXT>` tokens IMAGE, everything else TEMPLATE. The trailing
"assistant" tokens are kept: in a causal model they are the ones that have read the whole turn.
Batches are right-padded, so every real token sees exactly what it would see alone (position ids and causal
attention are unchanged); a batch therefore gives its items' one-by-one results.

An empty (or all-whitespace) prompt is allowed and means "no instruction": the conditioning then comes from the
template and the references only. This is what a negative / unconditional prompt uses.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError

from .errors import SqueezeInputError, SqueezeModelError
from .images import prepare_reference
from .settings import EncoderConfig  # noqa: F401 (re-exported)

logger = logging.getLogger("squeeze.mllm")

MLLM_MODEL_TYPE = "internvl"
# the special tokens of InternVL3's tokenizer that Squeeze writes or checks for (the miniature's tokenizers carry them too)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
HF_LAYOUT_HINT = (
    "Put an InternVL3 checkpoint in the transformers '-hf' layout there (config.json, model*.safetensors, "
    "tokenizer.json, tokenizer_config.json, preprocessor_config.json), e.g. a local copy of OpenGVLab/InternVL3-8B-hf. "
    "Squeeze never downloads weights."
)


class TokenType(IntEnum):
    PAD = 0
    TEXT = 1  # the user's prompt
    IMAGE = 2  # <IMG_CONTEXT> tokens: the reference images as the MLLM sees them
    TEMPLATE = 3  # chat markup, image delimiters and labels, system prompt


@dataclass(frozen=True)
class MLLMInfo:
    """What a DLA must match: the MLLM's family, depth and width, and its language model's type and vocabulary
    (two MLLMs can share family, depth and width and still read text differently)."""

    model_type: str  # transformers model_type, "internvl" for InternVL3-hf
    num_layers: int  # decoder layers of the language model (InternVL3-8B: 28)
    hidden_size: int  # width of the language model (InternVL3-8B: 3584)
    name: str = ""  # checkpoint directory name: in messages, never compared (a renamed copy is the same model)
    text_model_type: str = ""  # the language model's model_type, e.g. "qwen2"; "" = not recorded (older DLA files)
    vocab_size: int = 0  # the language model's vocabulary; 0 = not recorded

    def describe(self) -> str:
        label = self.name or self.model_type
        text = f", {self.text_model_type}" if self.text_model_type else ""
        vocab = f", vocabulary {self.vocab_size}" if self.vocab_size else ""
        return f"{label} ({self.model_type}, {self.num_layers} layers x {self.hidden_size}{text}{vocab})"

    def matches(self, other: "MLLMInfo") -> bool:
        if (self.model_type, self.num_layers, self.hidden_size) != (other.model_type, other.num_layers, other.hidden_size):
            return False
        if self.text_model_type and other.text_model_type and self.text_model_type != other.text_model_type:
            return False
        return not (self.vocab_size and other.vocab_size and self.vocab_size != other.vocab_size)

    @classmethod
    def from_config(cls, config: dict, name: str = "") -> "MLLMInfo":
        """From a checkpoint's config.json, without loading any weight."""
        text = config.get("text_config") or {}
        try:
            return cls(config.get("model_type", ""), int(text["num_hidden_layers"]), int(text["hidden_size"]), name,
                       text.get("model_type", ""), int(text.get("vocab_size") or 0))
        except (KeyError, TypeError, ValueError) as error:
            raise SqueezeModelError(f"MLLM '{name}' config.json has no usable text_config ({error!r}). {HF_LAYOUT_HINT}") from error


@dataclass
class MLLMOutput:
    hidden_states: torch.Tensor  # (L, B, T, H) output of every decoder layer (HF applies the final norm to the last)
    attention_mask: torch.Tensor  # (B, T) 1 for real tokens, 0 for right padding
    token_types: torch.Tensor  # (B, T) TokenType values
    input_ids: torch.Tensor  # (B, T)

    @property
    def num_layers(self) -> int:
        return self.hidden_states.shape[0]


def _read_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SqueezeModelError(f"MLLM directory '{path}' has no config.json, so it is not a transformers checkpoint. {HF_LAYOUT_HINT}")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SqueezeModelError(f"MLLM config '{config_file}' could not be read ({error}). {HF_LAYOUT_HINT}") from error


def check_mllm_dir(path) -> dict:
    """Check that `path` holds an InternVL3 "-hf" checkpoint before anything heavy happens; return its config."""
    path = Path(path)
    if not path.exists():
        raise SqueezeModelError(f"MLLM directory '{path}' does not exist. {HF_LAYOUT_HINT}")
    if not path.is_dir():
        raise SqueezeModelError(f"MLLM path '{path}' is a file; it must be a checkpoint directory. {HF_LAYOUT_HINT}")
    config = _read_config(path)
    model_type = config.get("model_type")
    if model_type == "internvl_chat":
        raise SqueezeModelError(
            f"MLLM directory '{path}' holds InternVL3 in its original remote-code layout ('internvl_chat'). "
            "Use the transformers '-hf' conversion of the same model (e.g. OpenGVLab/InternVL3-8B-hf)."
        )
    if model_type != MLLM_MODEL_TYPE:
        raise SqueezeModelError(
            f"MLLM directory '{path}' holds a {model_type!r} checkpoint, not InternVL3 ({MLLM_MODEL_TYPE!r}). {HF_LAYOUT_HINT}"
        )
    if not any(path.glob("*.safetensors")):
        raise SqueezeModelError(
            f"MLLM directory '{path}' has no .safetensors weights. Squeeze loads safetensors only (never pickled "
            ".bin files); use a checkpoint that ships safetensors."
        )
    if not (path / "tokenizer_config.json").is_file():
        raise SqueezeModelError(f"MLLM directory '{path}' is missing tokenizer_config.json. {HF_LAYOUT_HINT}")
    # older transformers save the image processor as preprocessor_config.json, current ones as processor_config.json
    if not any((path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise SqueezeModelError(
            f"MLLM directory '{path}' has neither preprocessor_config.json nor processor_config.json (the image "
            f"processor). {HF_LAYOUT_HINT}"
        )
    return config


def _special_token(tokenizer, attribute: str, default: str) -> tuple[str, int]:
    token = getattr(tokenizer, attribute, None) or default
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(token_id) != token:
        raise SqueezeModelError(f"The MLLM tokenizer has no {token!r} token: it is not an InternVL3 tokenizer.")
    return token, token_id


class InternVL3Encoder:
    """Encodes prompts with their reference images and returns all decoder layers (see the module docstring)."""

    def __init__(self, model, tokenizer, image_processor, config: EncoderConfig | None = None, name: str = ""):
        self.model = model
        # the InternVLModel that encoding runs: the model itself, or the one inside a ...ForConditionalGeneration
        self.backbone = model.model if hasattr(model, "lm_head") else model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.config = config or EncoderConfig()
        self.name = name
        vision = model.config.vision_config
        image_size = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
        patch_size = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
        self.tile_size = int(image_size)
        self.tokens_per_image = int((image_size // patch_size) ** 2 * model.config.downsample_ratio**2)
        self.image_start, _ = _special_token(tokenizer, "start_image_token", "<img>")
        self.image_end, _ = _special_token(tokenizer, "end_image_token", "</img>")
        self.image_context, self.image_context_id = _special_token(tokenizer, "context_image_token", "<IMG_CONTEXT>")
        if self.image_context_id != model.config.image_token_id:
            raise SqueezeModelError(
                f"The tokenizer's {self.image_context} id ({self.image_context_id}) differs from the model config's "
                f"image_token_id ({model.config.image_token_id}): tokenizer and weights come from different checkpoints."
            )
        self.reserved_tokens = sorted(set(tokenizer.get_added_vocab()) | {self.image_start, self.image_end, self.image_context})
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad_id if pad_id is not None else 0)

    @classmethod
    def from_pretrained(
        cls,
        path,
        dtype: torch.dtype = torch.bfloat16,
        device="cpu",
        config: EncoderConfig | None = None,
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
        with_lm_head: bool = False,
    ) -> "InternVL3Encoder":
        """Load an InternVL3 "-hf" directory. Offline and safetensors-only; remote code only if asked for.

        Encoding reads the hidden states of every layer and never the language-model head, so by default only the
        backbone (`InternVLModel`: vision tower, projector, language model) is loaded: InternVL3-8B's untied
        `lm_head` (151674 x 3584, 1.1 GB in bf16) is never read from disk, held or moved. `with_lm_head=True` loads
        `InternVLForConditionalGeneration`, for generating text (the miniature's MLLM probes)."""
        from transformers import AutoImageProcessor, AutoTokenizer, InternVLForConditionalGeneration, InternVLModel

        path = Path(path)
        check_mllm_dir(path)
        logger.info("loading InternVL3 from %s (%s, %s)", path, dtype, device)
        common = dict(local_files_only=True, trust_remote_code=trust_remote_code)
        try:
            model_class = InternVLForConditionalGeneration if with_lm_head else InternVLModel
            model, loading_info = model_class.from_pretrained(
                path, dtype=dtype, use_safetensors=True, attn_implementation=attn_implementation,
                output_loading_info=True, **common,
            )
            tokenizer = AutoTokenizer.from_pretrained(path, **common)
            image_processor = AutoImageProcessor.from_pretrained(path, **common)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
            # RuntimeError: transformers' report of tensors whose shapes do not fit the config
            raise SqueezeModelError(f"MLLM directory '{path}' could not be loaded as InternVL3: {error}. {HF_LAYOUT_HINT}") from error
        # transformers only warns about missing tensors and fills them with random values: refuse instead.
        tied = set(getattr(model, "_tied_weights_keys", None) or ())
        missing = sorted(k for k in loading_info.get("missing_keys", ()) if k not in tied and not k.startswith("lm_head."))
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise SqueezeModelError(
                f"MLLM directory '{path}' lacks {len(missing)} weight tensors ({shown}): the checkpoint is incomplete "
                "or its shards are missing; copy the whole checkpoint again."
            )
        model.requires_grad_(False).eval().to(device)
        return cls(model, tokenizer, image_processor, config=config, name=path.name)

    @property
    def info(self) -> MLLMInfo:
        text = self.model.config.text_config
        return MLLMInfo(MLLM_MODEL_TYPE, int(text.num_hidden_layers), int(text.hidden_size), self.name,
                        str(getattr(text, "model_type", "") or ""), int(getattr(text, "vocab_size", 0) or 0))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- inputs
    def _check_prompt(self, prompt, index: int) -> str:
        if not isinstance(prompt, str):
            raise SqueezeInputError(f"prompt {index} is a {type(prompt).__name__}; prompts must be strings.")
        for token in self.reserved_tokens:
            if token in prompt:
                raise SqueezeInputError(
                    f"prompt {index} contains the MLLM's reserved token {token!r}; remove it (references are passed "
                    "as images, not as tokens)."
                )
        return prompt.strip()

    def render(self, prompt: str, num_references: int) -> tuple[str, int, int]:
        """The chat turn as text, and the character span of the prompt inside it."""
        parts = []
        if self.config.system_prompt:
            parts.append(f"<|im_start|>system\n{self.config.system_prompt}<|im_end|>\n")
        parts.append("<|im_start|>user\n")
        image = self.image_start + self.image_context * self.tokens_per_image + self.image_end + "\n"
        for i in range(num_references):
            parts.append((f"Image-{i + 1}: " if num_references > 1 else "") + image)
        start = len("".join(parts))
        parts.append(prompt)
        parts.append("<|im_end|>\n<|im_start|>assistant\n")
        return "".join(parts), start, start + len(prompt)

    def _tokenize(self, prompt: str, num_references: int) -> tuple[list[int], list[int]]:
        text, start, end = self.render(prompt, num_references)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        types = []
        for token_id, (token_start, token_end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
            if token_id == self.image_context_id:
                types.append(TokenType.IMAGE)
            elif token_start < end and token_end > start:
                types.append(TokenType.TEXT)
            else:
                types.append(TokenType.TEMPLATE)
        return list(encoded["input_ids"]), types

    def _normalize_references(self, prompts: Sequence[str], references) -> list[list]:
        if references is None:
            return [[] for _ in prompts]
        if len(references) != len(prompts):
            raise SqueezeInputError(
                f"got {len(prompts)} prompts but {len(references)} reference lists; pass one list (possibly empty) per prompt."
            )
        normalized = []
        for index, refs in enumerate(references):
            refs = [] if refs is None else list(refs)
            if len(refs) > self.config.max_references:
                raise SqueezeInputError(
                    f"prompt {index} has {len(refs)} reference images; the limit is {self.config.max_references} "
                    f"(each costs {self.tokens_per_image} MLLM tokens). Pass fewer, or raise EncoderConfig.max_references."
                )
            normalized.append(refs)
        return normalized

    def build_inputs(self, prompts: Sequence[str], references=None) -> dict:
        """Token ids, masks and pixel values for a batch, on the CPU. `references[i]` is a list of images for prompt i."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise SqueezeInputError("no prompts given; pass at least one (an empty string is a valid prompt).")
        references = self._normalize_references(prompts, references)
        rows, tiles = [], []
        for index, (prompt, refs) in enumerate(zip(prompts, references)):
            prompt = self._check_prompt(prompt, index)
            for ref_index, image in enumerate(refs):
                name = f"reference image {ref_index} of prompt {index}"
                tiles.append(prepare_reference(image, self.tile_size, self.config.aspect_mode, name=name))
            rows.append(self._tokenize(prompt, len(refs)))
        length = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        token_types = torch.full((len(rows), length), int(TokenType.PAD), dtype=torch.long)
        for row, (ids, types) in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            token_types[row, : len(ids)] = torch.tensor([int(t) for t in types])
        pixel_values = None
        if tiles:
            size = {"height": self.tile_size, "width": self.tile_size}
            pixel_values = self.image_processor(
                images=tiles, crop_to_patches=False, size=size, return_tensors="pt"
            )["pixel_values"]
        return dict(input_ids=input_ids, attention_mask=attention_mask, token_types=token_types, pixel_values=pixel_values)

    # ---------------------------------------------------------------- forward
    @torch.no_grad()
    def encode(self, prompts: Sequence[str], references=None) -> MLLMOutput:
        """Encode prompts (each with 0..max_references images); None references = prompt-only (denoising phase 3)."""
        inputs = self.build_inputs(prompts, references)
        device, dtype = self.device, self.model.dtype
        pixel_values = inputs["pixel_values"]
        outputs = self.backbone(
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
            pixel_values=None if pixel_values is None else pixel_values.to(device, dtype),
            output_hidden_states=True,
            use_cache=False,
            return_dict=True,
        )
        hidden_states = torch.stack(outputs.hidden_states[1:])  # drop the embedding output: (L, B, T, H)
        return MLLMOutput(
            hidden_states=hidden_states,
            attention_mask=inputs["attention_mask"].to(device),
            token_types=inputs["token_types"].to(device),
            input_ids=inputs["input_ids"].to(device),
        )
