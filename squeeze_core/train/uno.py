"""UNO-1M -> Squeeze manifest.

UNO-1M (the paper's training data) unpacks as::

    UNO-1M/
        images/split1/<name>_<W>x<H>.png, images/split2/..., ...
        uno_1m_total_labels.json        a JSON list, one record per image pair (or labels/split*.json, one per split)

Each record pairs two images of one subject and captions both::

    {"img_path1": "split1/a.png", "img_path2": "split1/b.png",
     "caption": {"img_path1": "...", "img_path2": "..."}, "score_final": 4.0, ...}

Paths are relative to `images/`. The converter keeps pairs whose `score_final` is at least `min_score` (the paper
trains on the ~400K pairs that pass UNO's filter; UNO's own recipe uses 4.0), makes img_path1 the reference and
img_path2 the target with the target's caption as the prompt (`both_directions` adds the reverse pair too), checks
that both files exist (missing ones are counted, not fatal) and writes the manifest with paths relative to it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import SqueezeInputError
from ..files import atomic_write_text

logger = logging.getLogger("squeeze.train.uno")


def read_uno_labels(root: Path, labels=None) -> list[dict]:
    root = Path(root)
    if labels is not None:
        files = [Path(labels)]
    elif (root / "uno_1m_total_labels.json").is_file():
        files = [root / "uno_1m_total_labels.json"]
    else:
        files = sorted((root / "labels").glob("*.json"))
    if not files or not all(f.is_file() for f in files):
        raise SqueezeInputError(
            f"no UNO-1M labels under '{root}': expected uno_1m_total_labels.json or labels/split*.json (or pass --labels)."
        )
    records = []
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SqueezeInputError(f"UNO-1M labels '{file}' are not valid JSON ({error}).") from error
        if not isinstance(data, list):
            raise SqueezeInputError(f"UNO-1M labels '{file}' must be a JSON list of pair records.")
        records += data
    return records


def convert_uno(root, output, labels=None, min_score: float = 4.0, both_directions: bool = False) -> Counter:
    """Write a Squeeze manifest for UNO-1M at `root`; returns counts (written, low_score, missing_image, malformed)."""
    root, output = Path(root), Path(output)
    images = root / "images"
    if not images.is_dir():
        raise SqueezeInputError(f"'{root}' has no images/ folder; point it at the unpacked UNO-1M directory.")
    counts: Counter = Counter()
    lines = []
    for record in tqdm(read_uno_labels(root, labels), desc="UNO-1M pairs"):
        try:
            first, second = record["img_path1"], record["img_path2"]
            captions = record["caption"]
            score = float(record.get("score_final", 0.0))
        except (KeyError, TypeError, ValueError):
            counts["malformed"] += 1
            continue
        if score < min_score:
            counts["low_score"] += 1
            continue
        if not ((images / first).is_file() and (images / second).is_file()):
            counts["missing_image"] += 1
            continue
        directions = [(first, second, "img_path2")] + ([(second, first, "img_path1")] if both_directions else [])
        for reference, target, caption_key in directions:
            prompt = captions.get(caption_key) if isinstance(captions, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                counts["malformed"] += 1
                continue
            relative = lambda name: os.path.relpath(images / name, output.parent)  # noqa: E731
            lines.append(json.dumps({"references": [relative(reference)], "target": relative(target), "prompt": prompt.strip()}))
            counts["written"] += 1
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, "".join(line + "\n" for line in lines))
    logger.info("UNO-1M: %s", dict(counts))
    return counts
