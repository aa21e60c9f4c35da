"""The miniature InternVL3: an InternVL3-architecture MLLM pretrained from scratch on the mini world's training renders.

    world = load_world("runs/mini/world")
    metrics = pretrain_mllm(world, "runs/mini/mllm")            # ~5 min on 2 CPU cores; MiniMLLMConfig.quick() for CI
    encoder = InternVL3Encoder.from_pretrained("runs/mini/mllm", dtype=torch.float32)   # the real loader, unchanged
    describe("runs/mini/mllm", [image])                          # ["a small pointy-eared red and blue striped toy ..."]
    validate_mllm("runs/mini/mllm", world)                       # held-out identities: per-attribute accuracy
    layer_probe("runs/mini/mllm", world)                         # linear probe per layer: identity vs scene

What it is trained on: chat turns built exactly as `squeeze_core.mllm.InternVL3Encoder` builds them (the encoder
object itself tokenises the user turn, so the format cannot drift), one image and one of `QUESTIONS` per turn, then
the answer and "<|im_end|>"; the loss is on the answer tokens only. Three questions, so that the layers must keep
both the identity (its details) and the scene (setting, position, size, companion) apart:

    "Describe the image."    -> caption(identity, scene)     "a small pointy-eared red and blue ... on the beach, ..."
    "Describe the subject."  -> identity.details()           "pointy-eared red and blue striped toy with a ring mark"
    "Describe the scene."    -> scene_description(scene)     "a small subject on the beach, on the left, next to a tree"

The checkpoint it writes is a complete InternVL3 "-hf" directory (config.json, model.safetensors, a byte-level BPE
tokenizer with InternVL's special tokens, preprocessor_config.json for GotOcr2's image processor at 64 px), so
everything downstream loads it as it would load OpenGVLab/InternVL3-8B-hf. Only training renders are read; the
held-out identities are used by `validate_mllm` and `layer_probe` alone. Deterministic for `MiniMLLMConfig.seed`
(same thread count: the CPU kernels' reduction order depends on it).
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..mllm import SPECIAL_TOKENS, InternVL3Encoder, TokenType
from .schedule import warmup_cosine_factor
from .world import (
    CLASS_VARIANTS,
    IDENTITY_ATTRIBUTES,
    PATTERNS,
    POSITIONS,
    SCENE_ATTRIBUTES,
    SETTINGS,
    Identity,
    Scene,
    caption,
    prompt,
    render,
)

logger = logging.getLogger("squeeze.mini.mllm")

PAD_TOKEN, END_TOKEN = "<|endoftext|>", "<|im_end|>"


# ----------------------------------------------------------------------------------------------- questions and answers
def scene_description(scene: Scene) -> str:
    """The scene half of a caption, with "subject" standing in for the identity: what "Describe the scene." answers."""
    words = f"{SETTINGS[scene.setting][2]}, {POSITIONS[scene.position][1]}"
    return f"a {scene.size} subject {words}" + (f", next to a {scene.companion}" if scene.companion != "none" else "")


QUESTIONS = {  # question -> its answer for (identity, scene)
    "Describe the image.": caption,
    "Describe the subject.": lambda identity, scene: identity.details(),
    "Describe the scene.": lambda identity, scene: scene_description(scene),
}


def answer(question: str, identity: Identity, scene: Scene) -> str:
    return QUESTIONS[question](identity, scene)


# ------------------------------------------------------------------------------------------------------- tokenizer
TEMPLATE_WORDS = ["system", "user", "assistant", "\n", " "] + [f"Image-{i}: " for i in range(1, 10)]


def tokenizer_corpus(world) -> list[str]:
    """The texts the tokenizer is trained on: the chat template's words, the questions, and every answer and prompt
    of the world's training renders, in the world's order (held-out identities' texts are never read)."""
    texts = list(TEMPLATE_WORDS) + list(QUESTIONS)
    for identity, item in world.train_renders():
        texts += [answer(question, identity, item.scene) for question in QUESTIONS]
        texts.append(prompt(identity.klass, item.scene))
    return texts


def build_mini_tokenizer(texts, vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on `texts` (e.g. `tokenizer_corpus(world)`), with InternVL3's special tokens.

    Byte-level, so any text still encodes (unknown words fall back to bytes); the merges make each of the world's
    words one or two tokens. Configured as `squeeze_core.testing.build_tiny_tokenizer` (pad <|endoftext|>, eos
    <|im_end|>). Deterministic: the trainer breaks ties by pair order, and the corpus order is fixed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD_TOKEN, eos_token=END_TOKEN)


# ---------------------------------------------------------------------------------------------------------- config
@dataclass
class MiniMLLMConfig:
    seed: int = 0
    # language model (Qwen2, as InternVL3's): every decoder layer is an input of Squeeze's DLA
    num_layers: int = 6
    hidden_size: int = 96
    num_heads: int = 4  # head dim 24
    num_kv_heads: int = 2  # grouped-query attention, as InternVL3
    intermediate_size: int = 256
    vocab_size: int = 512  # BPE target: 256 bytes + 7 special tokens + merges
    # vision tower (InternViT): 64 px / 8 px patches = 64 patches -> 16 image tokens after the 0.5 pixel shuffle
    vision_hidden_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate_size: int = 128
    image_size: int = 64
    patch_size: int = 8
    # optimisation
    # 6000: the class, variant, second colour and companion read far better than at 2000 (0.82 vs 0.49 for the class,
    # docs/mini/findings.md); more small steps beat fewer large ones at equal samples (2000 x 16 vs 1000 x 32)
    steps: int = 6000
    batch_size: int = 16
    learning_rate: float = 2e-3  # peak; linear warm-up, then cosine to lr_min_ratio * peak
    warmup_steps: int = 100
    lr_min_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    vision_lr_scale: float = 1.0  # learning-rate factor for the vision tower and projector
    question_weights: tuple = (1, 1, 1)  # how often each of QUESTIONS is asked (image, subject, scene)
    # torch CPU threads while training; 0 leaves torch's setting. Two jobs that each use every core on a shared
    # CPU slow each other down tenfold or more (every small op waits at a thread barrier), so give parallel jobs 1.
    threads: int = 0

    @classmethod
    def quick(cls, **overrides) -> "MiniMLLMConfig":
        """The CI size: the same architecture trained for a few steps (well under a minute)."""
        return replace(cls(steps=60, batch_size=16, warmup_steps=10), **overrides)

    def __post_init__(self):
        if self.image_size % (2 * self.patch_size):
            raise ValueError("image_size must be a multiple of 2 * patch_size (InternVL's 0.5 pixel shuffle halves the grid)")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2 // 4


def internvl_config(config: MiniMLLMConfig, tokenizer):
    """The transformers InternVLConfig at the miniature's sizes (the layout of tiny.tiny_internvl3_config)."""
    from transformers import InternVLConfig

    pad_id, end_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN), tokenizer.convert_tokens_to_ids(END_TOKEN)
    return InternVLConfig(
        vision_config=dict(
            hidden_size=config.vision_hidden_size, num_hidden_layers=config.vision_layers,
            num_attention_heads=config.vision_heads, intermediate_size=config.vision_intermediate_size,
            image_size=config.image_size, patch_size=config.patch_size,
        ),
        text_config=dict(
            model_type="qwen2", hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
            intermediate_size=config.intermediate_size, vocab_size=len(tokenizer), max_position_embeddings=512,
            tie_word_embeddings=True, bos_token_id=pad_id, eos_token_id=end_id, pad_token_id=pad_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=config.tokens_per_image,
        downsample_ratio=0.5,
    )


def _image_processor(config: MiniMLLMConfig):
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    size = {"height": config.image_size, "width": config.image_size}
    return GotOcr2ImageProcessorPil(size=size, crop_to_patches=False)


def build_encoder(config: MiniMLLMConfig, tokenizer) -> InternVL3Encoder:
    """A freshly initialised model wrapped in the Squeeze encoder (which then tokenises the training turns)."""
    from transformers import InternVLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = InternVLForConditionalGeneration(internvl_config(config, tokenizer)).to(torch.float32)
    end_id = tokenizer.convert_tokens_to_ids(END_TOKEN)
    model.generation_config.eos_token_id = end_id  # generation stops at the end of the assistant turn
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.pad_token_id
    return InternVL3Encoder(model, tokenizer, _image_processor(config), name="mini-internvl3")


# -------------------------------------------------------------------------------------------------------- training
class _ChatBatches:
    """Training turns for the world's training renders: the encoder's user turn, then the answer and <|im_end|>."""

    def __init__(self, encoder: InternVL3Encoder, items: list[tuple[Identity, object]], progress: bool):
        self.encoder, self.items = encoder, items
        tokenizer = encoder.tokenizer
        self.end_id = tokenizer.convert_tokens_to_ids(END_TOKEN)
        self.questions = list(QUESTIONS)
        # The user turn's tokens do not depend on the image (its tokens are placeholders), so one per question.
        self.prompt_ids = [encoder.build_inputs([q], [[_blank(encoder.tile_size)]])["input_ids"][0] for q in self.questions]
        self.pixel_values = self._pixels(progress)
        self.answers = {}  # (item, question) -> answer token ids, tokenised on first use

    def _pixels(self, progress: bool) -> torch.Tensor:
        chunks, chunk = [], 256
        bar = tqdm(total=len(self.items), desc="mllm: preparing images", unit="img", disable=not progress)
        for start in range(0, len(self.items), chunk):
            images = [_load(r.path) for _, r in self.items[start : start + chunk]]
            # the encoder's own path (prepare_reference + the checkpoint's image processor), as at inference
            chunks.append(self.encoder.build_inputs([""] * len(images), [[im] for im in images])["pixel_values"])
            bar.update(len(images))
        bar.close()
        return torch.cat(chunks)

    def _answer_ids(self, index: int, question: int) -> list[int]:
        key = (index, question)
        if key not in self.answers:
            identity, item = self.items[index]
            text = answer(self.questions[question], identity, item.scene)
            self.answers[key] = self.encoder.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.end_id]
        return self.answers[key]

    def batch(self, indices: list[int], questions: list[int]) -> dict:
        rows = []
        for index, question in zip(indices, questions):
            prompt_ids = self.prompt_ids[question].tolist()
            rows.append((prompt_ids, self._answer_ids(index, question)))
        length = max(len(p) + len(a) for p, a in rows)
        input_ids = torch.full((len(rows), length), self.encoder.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)  # -100: no loss (user turn, padding)
        for row, (p, a) in enumerate(rows):
            input_ids[row, : len(p) + len(a)] = torch.tensor(p + a)
            attention_mask[row, : len(p) + len(a)] = 1
            labels[row, len(p) : len(p) + len(a)] = torch.tensor(a)
        return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                    pixel_values=self.pixel_values[torch.tensor(indices)])


def _blank(size: int) -> Image.Image:
    return Image.new("RGB", (size, size))


def _load(path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _schedule(step: int, config: MiniMLLMConfig) -> float:
    """Learning-rate factor: linear warm-up, then cosine down to lr_min_ratio."""
    return warmup_cosine_factor(step, config.steps, config.warmup_steps, config.lr_min_ratio)


def _order(count: int, config: MiniMLLMConfig):
    """(item indices, question indices) per step: seeded epochs over the renders, a seeded question per turn (mixed
    within a batch: batches of one question each trained worse in a like-for-like run)."""
    rng = random.Random(config.seed)
    order: list[int] = []
    for _ in range(config.steps):
        if len(order) < config.batch_size:
            epoch = list(range(count))
            rng.shuffle(epoch)
            order += epoch
        indices, order = order[: config.batch_size], order[config.batch_size :]
        yield indices, rng.choices(range(len(QUESTIONS)), weights=config.question_weights, k=len(indices))


def _answer_loss(model, batch: dict) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   pixel_values=batch["pixel_values"], use_cache=False).logits
    # token t predicts token t+1; only answer tokens (and the closing <|im_end|>) carry a label
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )


def _optimizer(model, config: MiniMLLMConfig) -> torch.optim.Optimizer:
    # no weight decay on norms, biases and embeddings (the usual GPT recipe)
    groups = {}
    for name, parameter in model.named_parameters():
        vision = "vision_tower" in name or "multi_modal_projector" in name
        decay = parameter.ndim >= 2 and "embed" not in name
        groups.setdefault((vision, decay), []).append(parameter)
    return torch.optim.AdamW(
        [dict(params=params, weight_decay=config.weight_decay if decay else 0.0,
              lr_scale=config.vision_lr_scale if vision else 1.0) for (vision, decay), params in groups.items()],
        lr=config.learning_rate, betas=(0.9, 0.95),
    )


def pretrain_mllm(world, out_dir, config: MiniMLLMConfig | None = None, progress: bool = True) -> dict:
    """Train the miniature InternVL3 from scratch on `world`'s training renders and save it as an "-hf" checkpoint.

    Returns {"final_loss", "loss_curve" (one float per step), "wall_seconds", "parameters", "steps", "config"}."""
    config = config or MiniMLLMConfig()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _pretrain(world, Path(out_dir), config, progress)
    finally:
        torch.set_num_threads(threads)


def _pretrain(world, out_dir: Path, config: MiniMLLMConfig, progress: bool) -> dict:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    encoder = build_encoder(config, build_mini_tokenizer(tokenizer_corpus(world), config.vocab_size))
    model = encoder.model.train()
    data = _ChatBatches(encoder, world.train_renders(), progress)
    optimizer = _optimizer(model, config)
    parameters = sum(p.numel() for p in model.parameters())
    logger.info("pretraining a %.2fM-parameter InternVL3 on %d training renders for %d steps",
                parameters / 1e6, len(data.items), config.steps)
    curve = []
    bar = tqdm(_order(len(data.items), config), total=config.steps,
               desc="mllm: pretraining", unit="step", disable=not progress)
    for step, (indices, questions) in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * group["lr_scale"] * _schedule(step, config)
        loss = _answer_loss(model, data.batch(indices, questions))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        curve.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{curve[-1]:.3f}")
    bar.close()
    _save(encoder, config, out_dir)
    wall = time.perf_counter() - started
    final = sum(curve[-20:]) / len(curve[-20:])  # the mean of the last steps: one batch's loss is noisy
    logger.info("mllm pretrained in %.0f s, final loss %.4f, saved to %s", wall, final, out_dir)
    return dict(final_loss=final, loss_curve=curve, wall_seconds=wall, parameters=parameters, steps=config.steps,
                config=asdict(config))


def _save(encoder: InternVL3Encoder, config: MiniMLLMConfig, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder.model.eval().save_pretrained(out_dir, safe_serialization=True)
    encoder.tokenizer.save_pretrained(out_dir)
    encoder.image_processor.save_pretrained(out_dir)


# ------------------------------------------------------------------------------------------------------- inference
def _as_encoder(model) -> InternVL3Encoder:
    if isinstance(model, InternVL3Encoder):
        return model
    return InternVL3Encoder.from_pretrained(model, dtype=torch.float32, with_lm_head=True)  # it generates text


@torch.no_grad()
def describe(model, images, question: str = "Describe the image.", batch_size: int = 64,
             max_new_tokens: int = 48) -> list[str]:
    """Greedy answers of the MLLM (a checkpoint directory or an InternVL3Encoder) to `question` about each image."""
    encoder = _as_encoder(model)
    if not hasattr(encoder.model, "lm_head"):
        raise ValueError("describe() generates text: give it a checkpoint directory, or an encoder loaded with "
                         "InternVL3Encoder.from_pretrained(..., with_lm_head=True).")
    end_id = encoder.tokenizer.convert_tokens_to_ids(END_TOKEN)
    answers = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        # one question for the whole batch: every turn has the same length, so no padding (which
        # the encoder puts on the right, where generation would continue from it)
        inputs = encoder.build_inputs([question] * len(chunk), [[image] for image in chunk])
        generated = encoder.model.generate(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"].to(encoder.model.dtype), max_new_tokens=max_new_tokens,
            do_sample=False, eos_token_id=end_id, pad_token_id=encoder.pad_token_id,
        )
        new = generated[:, inputs["input_ids"].shape[1] :]
        answers += [text.strip() for text in encoder.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


_VARIANT_WORDS = {word: (klass, index) for klass, words in CLASS_VARIANTS.items() for index, word in enumerate(words)}
_SETTING_PHRASES = {phrase: setting for setting, (_, _, phrase) in SETTINGS.items()}
_POSITION_PHRASES = {phrase: position for position, (_, phrase) in POSITIONS.items()}


def _first_word(text: str, vocabulary) -> str | None:
    for word in re.findall(r"[a-z-]+", text):
        if word in vocabulary:
            return word
    return None


def _first_phrase(text: str, phrases: dict) -> str | None:
    found = [(text.find(p), value) for p, value in phrases.items() if p in text]
    return min(found)[1] if found else None


def parse_caption(text: str) -> dict:
    """Invert `world.caption`: every attribute of ATTRIBUTES read from a caption, None where it cannot be read.

    Each attribute is read on its own, so a caption that gets one detail wrong still scores the others. `variant`
    is the index of the variant word within the parsed class's words (a variant word of another class is None:
    "tall" does not describe a vase). `companion` is "none" when the caption names no companion but reaches its
    position phrase (where a companion would follow)."""
    text = text.strip().lower()
    colours = re.search(r"\b([a-z]+) and ([a-z]+)\b", text)
    mark = re.search(r"\bwith an? ([a-z]+) mark\b", text)
    size = re.match(r"an? ([a-z]+)\b", text)
    companion = re.search(r"\bnext to an? ([a-z]+)\b", text)
    klass = _first_word(text, CLASS_VARIANTS)
    variant_word = _first_word(text, _VARIANT_WORDS)
    position = _first_phrase(text, _POSITION_PHRASES)
    parsed = dict(
        klass=klass,
        variant=_VARIANT_WORDS[variant_word][1] if variant_word and _VARIANT_WORDS[variant_word][0] == klass else None,
        primary=colours.group(1) if colours else None,
        secondary=colours.group(2) if colours else None,
        pattern=_first_word(text, PATTERNS),
        mark=mark.group(1) if mark else None,
        setting=_first_phrase(text, _SETTING_PHRASES),
        position=position,
        size=size.group(1) if size else None,
        companion=companion.group(1) if companion else ("none" if position else None),
    )
    vocabularies = {**IDENTITY_ATTRIBUTES, **SCENE_ATTRIBUTES}
    return {name: value if value in vocabularies[name] else None for name, value in parsed.items()}


def truth(identity: Identity, scene: Scene) -> dict:
    return {**identity.to_dict(), **scene.to_dict()}


def heldout_cases(world, limit: int | None = None) -> list[tuple[str, Identity, Scene, int]]:
    """(name, identity, scene, seed) for each held-out identity in each of its benchmark prompts' scenes, prompt-major
    (the first cases cover every identity once before any identity twice), so `limit` keeps the identities balanced."""
    cases = []
    for p in range(max(len(h.prompts) for h in world.heldout)):
        for i, held in enumerate(world.heldout):
            if p < len(held.prompts):
                cases.append((f"heldout{i:02d}_prompt{p:02d}.png", held.identity, held.prompts[p].scene, 7919 * i + p))
    return cases[:limit]


def _render_cases(cases) -> list[Image.Image]:
    return [render(identity, scene, seed) for _, identity, scene, seed in cases]


def validate_mllm(model, world, n: int | None = None, batch_size: int = 64, example_dir=None, examples: int = 8,
                  progress: bool = True) -> dict:
    """Describe held-out identities (never trained on) in their benchmark scenes and read the captions back.

    Returns {"n", "exact" (whole caption right), "accuracy" {attribute: fraction right}, "examples" [{image, truth,
    answer}]}; with `example_dir`, the example images are written there under their `image` names."""
    encoder = _as_encoder(model)
    cases = heldout_cases(world, n)
    images = _render_cases(cases)
    answers = []
    for start in tqdm(range(0, len(cases), batch_size), desc="mllm: validating", unit="batch", disable=not progress):
        answers += describe(encoder, images[start : start + batch_size], batch_size=batch_size)
    correct = {name: 0 for name in (*IDENTITY_ATTRIBUTES, *SCENE_ATTRIBUTES)}
    exact = 0
    for (_, identity, scene, _), text in zip(cases, answers):
        parsed, expected = parse_caption(text), truth(identity, scene)
        for name in correct:
            correct[name] += parsed[name] == expected[name]
        exact += text == caption(identity, scene)
    shown = [dict(image=name, truth=caption(identity, scene), answer=text)
             for (name, identity, scene, _), text in list(zip(cases, answers))[:examples]]
    if example_dir is not None:
        Path(example_dir).mkdir(parents=True, exist_ok=True)
        for example, image in zip(shown, images):
            image.save(Path(example_dir) / example["image"])
    return dict(n=len(cases), exact=exact / len(cases), accuracy={k: v / len(cases) for k, v in correct.items()},
                examples=shown)


# ----------------------------------------------------------------------------------------------------------- probe
PROBE_ATTRIBUTES = ("klass", "variant", "primary", "secondary", "pattern", "mark", "setting", "position", "size", "companion")


def _probe_label(name: str, identity: Identity, scene: Scene) -> str:
    # variant indices mean different shapes in different classes, so the probe reads the variant word
    if name == "variant":
        return CLASS_VARIANTS[identity.klass][identity.variant]
    return str(truth(identity, scene)[name])


@torch.no_grad()
def _features(encoder: InternVL3Encoder, images, batch_size: int, progress: bool, desc: str):
    """Per layer: the mean hidden state over the image tokens, and the last token's, for an empty prompt."""
    image_means, lasts = [], []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = images[start : start + batch_size]
        out = encoder.encode([""] * len(chunk), [[image] for image in chunk])
        is_image = (out.token_types == TokenType.IMAGE).to(out.hidden_states.dtype)  # (B, T)
        image_means.append((out.hidden_states * is_image[None, :, :, None]).sum(2) / is_image.sum(1)[None, :, None])
        last = out.attention_mask.sum(1) - 1  # right padding: the last real token
        lasts.append(out.hidden_states[:, torch.arange(len(chunk)), last])
    return torch.cat(image_means, 1).float(), torch.cat(lasts, 1).float()  # (L, N, H) each


def ridge_probe_accuracy(train_x, train_labels, test_x, test_labels, ridge: float = 1.0) -> float:
    """Closed-form ridge regression onto one-hot labels (features standardised on the training set); test accuracy."""
    classes = sorted(set(train_labels))
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.cat([(train_x - mean) / std, torch.ones(len(train_x), 1)], 1).double()
    y = torch.zeros(len(train_labels), len(classes), dtype=torch.float64)
    y[torch.arange(len(train_labels)), torch.tensor([classes.index(c) for c in train_labels])] = 1
    weights = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)
    tx = torch.cat([(test_x - mean) / std, torch.ones(len(test_x), 1)], 1).double()
    predicted = [classes[i] for i in (tx @ weights).argmax(1).tolist()]
    return sum(p == t for p, t in zip(predicted, test_labels)) / len(test_labels)


def layer_probe(model, world, n_train: int = 600, n_test: int = 300, batch_size: int = 50, ridge: float = 1.0,
                seed: int = 0, progress: bool = True) -> dict:
    """How the layers differ: a linear probe per layer for each identity and scene attribute.

    Fitted on `n_train` training renders (seeded sample), tested on `n_test` held-out identities in their benchmark
    scenes (`heldout_cases`), on two features per layer: the mean over the 16 image tokens and the last token of an
    empty-prompt turn. Returns {"layers", "attributes", "image_mean" {attr: [accuracy per layer]}, "last_token"
    {...}, "majority" {attr: accuracy of always guessing the training set's most common value}, "n_train", "n_test"}."""
    encoder = _as_encoder(model)
    train_items = random.Random(seed).sample(world.train_renders(), min(n_train, len(world.train_renders())))
    test_cases = heldout_cases(world, n_test)
    train_pairs = [(identity, r.scene) for identity, r in train_items]
    test_pairs = [(identity, scene) for _, identity, scene, _ in test_cases]
    train_feats = _features(encoder, [_load(r.path) for _, r in train_items], batch_size, progress, "probe: train")
    test_feats = _features(encoder, _render_cases(test_cases), batch_size, progress, "probe: held-out")
    result = dict(layers=encoder.info.num_layers, attributes=list(PROBE_ATTRIBUTES), n_train=len(train_pairs),
                  n_test=len(test_pairs), image_mean={}, last_token={}, majority={})
    for name in PROBE_ATTRIBUTES:
        train_labels = [_probe_label(name, *pair) for pair in train_pairs]
        test_labels = [_probe_label(name, *pair) for pair in test_pairs]
        common = max(sorted(set(train_labels)), key=train_labels.count)
        result["majority"][name] = sum(t == common for t in test_labels) / len(test_labels)
        for key, (train_x, test_x) in (("image_mean", (train_feats[0], test_feats[0])), ("last_token", (train_feats[1], test_feats[1]))):
            result[key][name] = [ridge_probe_accuracy(train_x[layer], train_labels, test_x[layer], test_labels, ridge)
                                 for layer in range(train_x.shape[0])]
    return result


def probe_table(result: dict, feature: str = "image_mean") -> str:
    """The probe result as a markdown table: one row per attribute, one column per layer, plus the majority guess."""
    layers = range(1, result["layers"] + 1)
    lines = ["| attribute | " + " | ".join(f"L{layer}" for layer in layers) + " | majority |",
             "|---" * (result["layers"] + 2) + "|"]
    for name in result["attributes"]:
        cells = " | ".join(f"{a:.2f}" for a in result[feature][name])
        lines.append(f"| {name} | {cells} | {result['majority'][name]:.2f} |")
    return "\n".join(lines)
