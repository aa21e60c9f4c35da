"""Training data: a JSONL manifest of subject pairs, aspect buckets, and a loader that never dies on a bad image.

Manifest, one JSON object per line (paths relative to the manifest's folder, or absolute)::

    {"references": ["dog/ref.jpg"], "target": "dog/beach.jpg", "prompt": "a dog on the beach"}
    {"references": ["a.png", "b.png"], "target": "ab.png", "prompt": "...", "width": 1024, "height": 768}

`width` / `height` (of the target) are optional; without them the target's header is read once at start-up to
pick its bucket. Buckets have area ~resolution^2, sides multiples of `bucket_step`, aspect up to `max_aspect`; a
target is scaled to cover its bucket and centre-cropped. A batch holds targets of one bucket only.

An image that is missing, unreadable or too small is skipped and counted (with a warning naming it), never the end
of the run: at start-up for the target's size, and again whenever a sample is loaded.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import SqueezeInputError

logger = logging.getLogger("squeeze.train.data")

IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, SyntaxError)
MIN_SIDE = 32  # px, as for references at inference


@dataclass
class Sample:
    references: list[Path]
    target: Path
    prompt: str
    size: tuple[int, int] | None = None  # target (width, height) when the manifest gives it


@dataclass
class SkipCounter:
    """Distinct images skipped so far, by reason (an image that fails every epoch counts once); the first few are
    named in warnings."""

    counts: dict[str, int] = field(default_factory=dict)
    warned: int = 0
    max_warnings: int = 20
    seen: set = field(default_factory=set)  # (path, reason) already counted, this process

    def add(self, path, reason: str) -> None:
        if (str(path), reason) in self.seen:
            return
        self.seen.add((str(path), reason))
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.warned < self.max_warnings:
            self.warned += 1
            logger.warning("skipping sample: image '%s' %s", path, reason)
            if self.warned == self.max_warnings:
                logger.warning("further skipped images are only counted (see metrics.jsonl)")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def read_manifest(path, max_references: int = 4) -> list[Sample]:
    """Parse a JSONL manifest; a malformed line is an error naming the line (the data, not an image, is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise SqueezeInputError(f"manifest '{path}' does not exist; write a JSONL file of {{references, target, prompt}}.")
    root = path.parent
    samples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise SqueezeInputError(f"manifest '{path}' is not UTF-8 text ({error}); write it as UTF-8 JSONL.") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"manifest '{path}' line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SqueezeInputError(f"{where} is not valid JSON ({error}).") from error
        if not isinstance(record, dict):
            raise SqueezeInputError(f"{where} must be a JSON object with references, target and prompt.")
        missing = [key for key in ("references", "target", "prompt") if key not in record]
        if missing:
            raise SqueezeInputError(f"{where} lacks {missing}; each line needs references (a list), target, prompt.")
        references = record["references"]
        if isinstance(references, str):
            references = [references]
        if not isinstance(references, list) or not references or not all(isinstance(r, str) for r in references):
            raise SqueezeInputError(f"{where}: references must be a non-empty list of image paths.")
        if len(references) > max_references:
            raise SqueezeInputError(
                f"{where} has {len(references)} references; max_references is {max_references}. Raise it or split the sample."
            )
        if not isinstance(record["target"], str) or not isinstance(record["prompt"], str):
            raise SqueezeInputError(f"{where}: target must be an image path and prompt a string.")
        size = None
        if "width" in record and "height" in record:
            size = (int(record["width"]), int(record["height"]))
        samples.append(Sample([root / r for r in references], root / record["target"], record["prompt"], size))
    if not samples:
        raise SqueezeInputError(f"manifest '{path}' has no samples.")
    return samples


# ----------------------------------------------------------------------------------------------------------- buckets
def make_buckets(resolution: int, step: int = 64, max_aspect: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) buckets of area ~resolution^2, sides multiples of `step`, from tallest to widest."""
    buckets = set()
    width = step
    while width <= resolution * math.sqrt(max_aspect) + 1e-6:
        height = max(step, int(round(resolution * resolution / width / step)) * step)
        if max(width / height, height / width) <= max_aspect + 1e-6:
            buckets.add((width, height))
        width += step
    return sorted(buckets, key=lambda wh: wh[0] / wh[1])


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> int:
    aspect = math.log(size[0] / size[1])
    return min(range(len(buckets)), key=lambda i: abs(math.log(buckets[i][0] / buckets[i][1]) - aspect))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only; raises one of IMAGE_ERRORS on a missing or unreadable file."""
    with Image.open(path) as image:
        return image.size


def assign_buckets(samples: list[Sample], buckets, skips: SkipCounter) -> tuple[list[Sample], list[int]]:
    """Keep the samples whose target size is known or readable; return them with their bucket index."""
    from tqdm.auto import tqdm

    kept, bucket_of = [], []
    unknown = sum(1 for s in samples if s.size is None)
    for sample in tqdm(samples, desc="reading target sizes", disable=unknown < 1000):
        size = sample.size
        if size is None:
            try:
                size = image_size(sample.target)
            except FileNotFoundError:
                skips.add(sample.target, "is missing")
                continue
            except IMAGE_ERRORS as error:
                skips.add(sample.target, f"is unreadable ({error})")
                continue
        if min(size) < MIN_SIDE:
            skips.add(sample.target, f"is too small ({size[0]}x{size[1]} px, need {MIN_SIDE})")
            continue
        kept.append(sample)
        bucket_of.append(nearest_bucket(size, buckets))
    return kept, bucket_of


class BucketBatches:
    """Deterministic batches of one bucket each, reshuffled per epoch and split across processes.

    Every process gets the same number of batches (the remainder is dropped), so steps stay in lock-step; the
    order depends only on (seed, epoch), so a resumed run continues with exactly the batches it would have seen.
    """

    def __init__(self, bucket_of: list[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.bucket_of, self.batch_size, self.seed, self.rank, self.world_size = bucket_of, batch_size, seed, rank, world_size
        if len(self.epoch(0)) == 0:
            sizes = {b: bucket_of.count(b) for b in sorted(set(bucket_of))}
            raise SqueezeInputError(
                f"no complete batch: batch_size={batch_size} x {world_size} process(es) is more than any aspect bucket "
                f"holds (samples per bucket: {sizes}). Lower batch_size or add data."
            )

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        by_bucket: dict[int, list[int]] = {}
        for index, bucket in enumerate(self.bucket_of):
            by_bucket.setdefault(bucket, []).append(index)
        batches = []
        for bucket in sorted(by_bucket):
            indices = by_bucket[bucket]
            rng.shuffle(indices)
            batches += [indices[i : i + self.batch_size] for i in range(0, len(indices) - self.batch_size + 1, self.batch_size)]
        rng.shuffle(batches)
        per_process = len(batches) // self.world_size
        return batches[self.rank * per_process : (self.rank + 1) * per_process]


# ----------------------------------------------------------------------------------------------------------- loading
def load_rgb(path: Path) -> Image.Image:
    from ..images import open_image

    with open_image(path, name="training image") as image:
        if min(image.size) < MIN_SIDE:
            raise ValueError(f"is too small ({image.size[0]}x{image.size[1]} px, need {MIN_SIDE})")
        if image.mode in ("RGBA", "LA", "PA", "P"):
            background = Image.new("RGB", image.size, (255, 255, 255))
            converted = image.convert("RGBA")
            background.paste(converted, mask=converted.getchannel("A"))
            return background
        return image.convert("RGB")


def cover_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover (width, height), then centre-crop: no distortion, no bars."""
    scale = max(width / image.width, height / image.height)
    resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.BICUBIC)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (H, W, 3) float in [0, 1], ComfyUI's IMAGE layout."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


class PairDataset(torch.utils.data.Dataset):
    """Loads one sample: the target cropped to its bucket and the references at their own size.

    A bad image yields {"skipped": path, "reason": ...} instead of raising, so a DataLoader worker never dies."""

    def __init__(self, samples: list[Sample], bucket_of: list[int], buckets: list[tuple[int, int]]):
        self.samples, self.bucket_of, self.buckets = samples, bucket_of, buckets

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        width, height = self.buckets[self.bucket_of[index]]
        loaded = []
        for path in [sample.target, *sample.references]:
            if not path.is_file():
                return {"skipped": str(path), "reason": "is missing"}
            try:
                loaded.append(load_rgb(path))
            except IMAGE_ERRORS as error:
                reason = str(error) if str(error).startswith("is ") else f"is unreadable ({error})"
                return {"skipped": str(path), "reason": reason}
        target = to_tensor(cover_crop(loaded[0], width, height))
        references = [to_tensor(image) for image in loaded[1:]]
        return {"index": index, "target": target, "references": references, "prompt": sample.prompt}


def collate(items: list[dict]) -> dict:
    """Good samples batched (targets share a bucket), bad ones listed."""
    good = [item for item in items if "skipped" not in item]
    return {
        "index": [item["index"] for item in good],
        "target": torch.stack([item["target"] for item in good]) if good else None,  # (B, H, W, 3)
        "references": [item["references"] for item in good],
        "prompt": [item["prompt"] for item in good],
        "skipped": [(item["skipped"], item["reason"]) for item in items if "skipped" in item],
    }


def epoch_loader(dataset: PairDataset, batches: list[list[int]], num_workers: int):
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers,
    )
