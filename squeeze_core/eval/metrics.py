"""DreamBench metrics: DINO-I, CLIP-I, CLIP-T and the copy-paste score, from local checkpoint directories.

    dino = DinoEmbedder.from_pretrained("models/eval/dino-vits16")            # facebook/dino-vits16, transformers format
    clip = ClipEmbedder.from_pretrained("models/eval/clip-vit-base-patch32")  # openai/clip-vit-base-patch32
    scores = score_folder("generated/", DreamBench.load("../shared/dreambench"), dino, clip)

Each model preprocesses with the image processor saved beside its weights (`preprocessor_config.json`), i.e. the
preprocessing it was trained with (facebook/dino-vits16: resize to 224 x 224, ImageNet statistics;
openai/clip-vit-base-patch32: short side to 224, centre crop 224, CLIP statistics). Embeddings: DINO's CLS token of the
last layer; CLIP's projected image and text features. All similarities are cosines of L2-normalised embeddings.

    DINO-I / CLIP-I   mean cosine between every generated image and every real photo of its subject
    CLIP-T            mean of max(cos(image, prompt), 0); per image, x 100 it is torchmetrics' CLIPScore (which,
                      given a batch, clamps the batch mean instead of each image)
    copy-paste        CP(g) = mean over the subject's other photos t of (theta(g, t) - theta(g, r)) / theta(t, r),
                      theta = the angle between DINO embeddings, r = the reference the model was given:
                      +1 when g is a copy of r, -1 when g is a copy of t, about 0 when g is as far from both
Per subject, then the mean over subjects ("overall"), as UNO and USO report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..errors import SqueezeModelError

logger = logging.getLogger("squeeze.eval")

PUBLISHED = {  # DESIGN.md: DINO-I / CLIP-I / CLIP-T on DreamBench as the papers report them
    "real images": {"dino_i": 0.774, "clip_i": 0.885, "clip_t": None},
    "UNO": {"dino_i": 0.760, "clip_i": 0.835, "clip_t": 0.304},
    "USO": {"dino_i": 0.777, "clip_i": 0.838, "clip_t": 0.317},
}


def open_rgb(path) -> Image.Image:
    from ..images import open_image

    return open_image(path, name="image").convert("RGB")


def _checkpoint(path, kind: str, model_types: tuple[str, ...], hint: str) -> Path:
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise SqueezeModelError(f"{kind} directory '{path}' has no config.json. {hint} Squeeze never downloads weights.")
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    if model_type not in model_types:
        raise SqueezeModelError(
            f"{kind} directory '{path}' holds a '{model_type}' model, not {' or '.join(repr(t) for t in model_types)}. {hint}"
        )
    if not any(path.glob("*.safetensors")):
        raise SqueezeModelError(f"{kind} directory '{path}' has no .safetensors weights (pickled weights are not loaded).")
    if not any((path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise SqueezeModelError(f"{kind} directory '{path}' has no preprocessor_config.json: its preprocessing is unknown.")
    return path


def _normalise(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=-1)


class _Embedder:
    """A frozen model and its processor; embeds in batches of `batch_size` and returns unit-length rows on the CPU."""

    KIND, MODEL_TYPES, HINT = "", (), ""

    def __init__(self, model, processor, device="cpu", batch_size: int = 32):
        self.model, self.processor, self.device, self.batch_size = model.to(device).eval(), processor, device, batch_size

    @classmethod
    def check_dir(cls, path) -> Path:
        """The checkpoint directory, after checking it holds this kind of model (an error says what to fix)."""
        return _checkpoint(path, cls.KIND, cls.MODEL_TYPES, cls.HINT)

    @torch.no_grad()
    def _embed(self, items: list, features) -> torch.Tensor:
        chunks = [items[start : start + self.batch_size] for start in range(0, len(items), self.batch_size)]
        return torch.cat([_normalise(features(chunk)).cpu() for chunk in chunks])

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)


class DinoEmbedder(_Embedder):
    KIND, MODEL_TYPES = "DINO", ("vit",)
    HINT = "Point it at a transformers copy of facebook/dino-vits16 (ViTModel)."

    @classmethod
    def from_pretrained(cls, path, device="cpu", **kwargs) -> "DinoEmbedder":
        from transformers import AutoImageProcessor, ViTModel

        path = cls.check_dir(path)
        model = ViTModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True, use_safetensors=True)
        return cls(model, AutoImageProcessor.from_pretrained(path, local_files_only=True), device, **kwargs)

    def images(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, D) unit-length CLS embeddings."""
        return self._embed(images, lambda chunk: self.model(pixel_values=self._pixels(chunk)).last_hidden_state[:, 0])


class ClipEmbedder(_Embedder):
    KIND, MODEL_TYPES = "CLIP", ("clip",)
    HINT = "Point it at a transformers copy of openai/clip-vit-base-patch32 (CLIPModel)."

    @classmethod
    def from_pretrained(cls, path, device="cpu", **kwargs) -> "ClipEmbedder":
        from transformers import CLIPModel, CLIPProcessor

        path = cls.check_dir(path)
        model = CLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        return cls(model, CLIPProcessor.from_pretrained(path, local_files_only=True), device, **kwargs)

    def images(self, images: list[Image.Image]) -> torch.Tensor:
        return self._embed(images, lambda chunk: _features(self.model.get_image_features(pixel_values=self._pixels(chunk))))

    def texts(self, texts: list[str]) -> torch.Tensor:
        def features(chunk):
            tokens = self.processor(text=chunk, return_tensors="pt", padding=True, truncation=True)
            return _features(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))

        return self._embed(texts, features)


def _features(output) -> torch.Tensor:
    """transformers 5 may return a model output where 4.x returned the projected tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# ------------------------------------------------------------------------------------------------------------ scores
def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine over every pair of rows of two unit-length embedding sets."""
    return float((a @ b.T).mean())


def clip_t(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Per image max(cos(image_i, text_i), 0), rows paired."""
    return (images * texts).sum(dim=-1).clamp(min=0)


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.arccos((a * b).sum(dim=-1).clamp(-1.0, 1.0))


def copy_paste(generated: torch.Tensor, reference: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(G, D) generated, (D,) reference, (T, D) other real photos -> (G,) copy-paste scores (mean over T)."""
    g, t = generated[:, None, :], others[None, :, :]
    between = angle(others, reference[None, :]).clamp(min=1e-6)[None, :]  # (1, T)
    return ((angle(g, t) - angle(generated, reference[None, :])[:, None]) / between).mean(dim=1)


@dataclass
class SubjectScores:
    dino_i: float
    clip_i: float
    clip_t: float
    copy_paste: float | None  # None when the subject has a single photo
    images: int


def score_subject(subject, paths_by_prompt: dict[int, list[Path]], dino: DinoEmbedder, clip: ClipEmbedder) -> SubjectScores:
    paths = [p for index in sorted(paths_by_prompt) for p in paths_by_prompt[index]]
    prompts = [subject.prompts[index] for index in sorted(paths_by_prompt) for _ in paths_by_prompt[index]]
    generated = [open_rgb(p) for p in paths]
    real = [open_rgb(p) for p in subject.images]
    dino_generated, dino_real = dino.images(generated), dino.images(real)
    clip_generated, clip_real = clip.images(generated), clip.images(real)
    text = clip.texts(prompts)
    cp = None
    if len(real) > 1:
        cp = float(copy_paste(dino_generated, dino_real[0], dino_real[1:]).mean())
    return SubjectScores(mean_cosine(dino_generated, dino_real), mean_cosine(clip_generated, clip_real),
                         float(clip_t(clip_generated, text).mean()), cp, len(paths))


def overall(per_subject: dict[str, SubjectScores]) -> dict[str, float]:
    """Mean over subjects (copy-paste over the subjects that have it)."""
    rows = list(per_subject.values())
    cps = [r.copy_paste for r in rows if r.copy_paste is not None]
    return {
        "dino_i": sum(r.dino_i for r in rows) / len(rows), "clip_i": sum(r.clip_i for r in rows) / len(rows),
        "clip_t": sum(r.clip_t for r in rows) / len(rows), "copy_paste": sum(cps) / len(cps) if cps else None,
        "images": sum(r.images for r in rows), "subjects": len(rows),
    }


def score_folder(folder, bench, dino: DinoEmbedder, clip: ClipEmbedder, prompt_indices=None, progress: bool = True) -> dict:
    """Score a generated folder (layout: squeeze_core/eval/dreambench.py) -> {"subjects": {...}, "overall": {...}}."""
    from dataclasses import asdict

    from tqdm.auto import tqdm

    from .dreambench import collect_generated

    generated = collect_generated(folder, bench, prompt_indices)  # fails on a gap before any model runs
    per_subject = {name: score_subject(bench.subjects[name], generated[name], dino, clip)
                   for name in tqdm(generated, desc="scoring", disable=not progress)}
    return {"subjects": {k: asdict(v) for k, v in per_subject.items()}, "overall": overall(per_subject)}
