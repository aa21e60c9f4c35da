"""The embedded default: trained models shipped inside the package, used by every `squeeze` verb and the
`Squeeze Mini ...` nodes when they are given no models (no download, a few seconds on a CPU).

    models = EmbeddedModels.packaged().check()       # squeeze_core/embedded/weights/
    models.mllm, models.transformer, models.vae      # the miniature InternVL3, FLUX and VAE
    models.dla, models.lora                          # Squeeze trained on them (DLA weights, FLUX LoRA)
    subject = models.subject(3)                      # held-out subject 3: .reference(0), .prompt(0), .words
    models.pairs                                     # a training manifest on the held-out references (`squeeze train`)

The weights are the miniature world's (squeeze_core/mini, docs/mini/README.md), copied here by `squeeze mini publish`,
which also writes the files this module reads: `benchmark/world.json` (the held-out subjects, their reference
renders, 25 prompts each, and the words that describe each subject) and `benchmark/pairs.jsonl`. This module only
knows where those files are and reads them; it imports nothing of the miniature's research code.

Layout::

    mllm/ vae/ flux/transformer/ flux/text_encoder/ flux/tokenizer/ judge.safetensors    the base models
    squeeze/squeeze_dla.safetensors, squeeze/squeeze_flux_lora.safetensors, squeeze/train_config.json
    benchmark/world.json, benchmark/pairs.jsonl, benchmark/images/heldout/*.png
    world_stats.json, pretrain_stats.json, squeeze_stats.json, MANIFEST.json (sha256 of every file, and its source)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import SqueezeInputError

PACKAGED = Path(__file__).resolve().parent / "weights"
MANIFEST = "MANIFEST.json"
SAMPLING = {"steps": 12, "width": 64, "height": 64, "long_side": 64}  # GenerateConfig for the embedded FLUX's size
WORLD_FILE, PAIRS_FILE = "world.json", "pairs.jsonl"


@dataclass(frozen=True)
class HeldoutSubject:
    """One held-out subject of the embedded benchmark: reference renders, benchmark prompts, the words for it."""

    index: int
    references: tuple[Path, ...]
    prompts: tuple[str, ...]
    words: str  # 'pointy-eared red and blue striped toy with a ring mark'

    def reference(self, k: int = 0) -> Path:
        return self.references[k]

    def prompt(self, k: int = 0) -> str:
        return self.prompts[k]


@dataclass(frozen=True)
class EmbeddedModels:
    """Where a complete set of embedded models lives (the packaged one, or any folder `squeeze mini publish` wrote)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def packaged(cls) -> "EmbeddedModels":
        return cls(PACKAGED)

    @property
    def models(self) -> Path:
        return self.root

    @property
    def world_dir(self) -> Path:
        return self.root / "benchmark"

    @property
    def mllm(self) -> Path:
        return self.root / "mllm"

    @property
    def transformer(self) -> Path:
        return self.root / "flux" / "transformer"

    @property
    def vae(self) -> Path:
        return self.root / "vae"

    @property
    def judge(self) -> Path:
        return self.root / "judge.safetensors"

    @property
    def squeeze(self) -> Path:
        return self.root / "squeeze"

    @property
    def dla(self) -> Path:
        from ..train.models import DLA_FILE

        return self.squeeze / DLA_FILE

    @property
    def lora(self) -> Path:
        from ..train.models import LORA_FILE

        return self.squeeze / LORA_FILE

    @property
    def pairs(self) -> Path:
        return self.world_dir / PAIRS_FILE

    def required(self) -> list[Path]:
        return [self.mllm / "config.json", self.transformer / "config.json", self.vae / "config.json", self.judge,
                self.dla, self.lora, self.world_dir / WORLD_FILE, self.pairs]

    def check(self) -> "EmbeddedModels":
        missing = [str(path) for path in self.required() if not path.is_file()]
        if missing:
            raise SqueezeInputError(f"the embedded models in '{self.root}' lack {', '.join(missing)}: reinstall the package, "
                                    "or rebuild them with `squeeze mini all` then `squeeze mini publish`.")
        return self

    def verify(self, under: tuple[str, ...] = ("",)) -> "EmbeddedModels":
        """check(), then every file that MANIFEST.json records under these folders (relative to root, e.g. ("mllm/",))
        against its sha256: a changed, truncated or missing file is an error naming it. Hashes are remembered per
        (size, mtime), so a second check of unchanged files reads nothing."""
        self.check()
        manifest = self.root / MANIFEST
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError) as error:
            raise SqueezeInputError(f"the embedded models' manifest '{manifest}' cannot be read ({error}): "
                                    "reinstall the package.") from error
        changed = []
        for relative in sorted(name for name in recorded if name.startswith(tuple(under))):
            path = self.root / relative
            if not path.is_file() or _cached_sha256(path) != recorded[relative]:
                changed.append(relative)
        if changed:
            raise SqueezeInputError(
                f"the embedded models in '{self.root}' were changed: {', '.join(changed[:5])}"
                f"{' and more' if len(changed) > 5 else ''} no longer match {MANIFEST}. Reinstall the package (or "
                "`git checkout -- squeeze_core/embedded/weights` in a clone); to use other mini models, publish them with "
                "`squeeze mini publish`.")
        return self

    @cached_property
    def _heldout(self) -> list[dict]:
        index = self.world_dir / WORLD_FILE
        try:
            return json.loads(index.read_text(encoding="utf-8"))["heldout"]
        except (OSError, ValueError, KeyError) as error:
            raise SqueezeInputError(f"the embedded benchmark '{index}' cannot be read ({error}): reinstall the package.") from error

    @property
    def subjects(self) -> int:
        return len(self._heldout)

    def subject(self, index: int) -> HeldoutSubject:
        if not 0 <= index < self.subjects:
            raise SqueezeInputError(f"held-out subject {index} does not exist: the embedded benchmark has subjects 0 to "
                                    f"{self.subjects - 1}.")
        entry = self._heldout[index]
        return HeldoutSubject(index, tuple(self.world_dir / r["file"] for r in entry["references"]),
                              tuple(p["prompt"] for p in entry["prompts"]), entry["words"])

    def manifest(self) -> dict:
        return json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_hash_cache: dict = {}


def _cached_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = sha256(path)
    return _hash_cache[key]


def file_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256, for every file under root but the manifest."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}
