"""DreamBench as the evaluation reads it, and the layout of a folder of generated images.

    bench = DreamBench.load("../shared/dreambench")           # 30 subjects, 25 prompts each
    bench.subjects["dog"].prompts[3]   -> "a dog on a cobblestone street"
    bench.subjects["dog"].reference    -> .../dog/00.jpg (the one image given to the model)

Protocol (as UNO and USO evaluate): prompts with the class word and no `sks` token; live subjects (class cat or dog)
use the live-subject prompt list, the others the object list; one reference per subject, its first photo in file-name
order (`00.jpg`); every photo of the subject is a real image for DINO-I / CLIP-I.

Generated folder layout (any tool's output can be scored if laid out so)::

    GENERATED/<subject>/<prompt index, 2 digits>_<seed>.png     e.g. GENERATED/dog/03_0.png, GENERATED/dog/03_1.png
    (.png, .jpg, .jpeg or .webp; one or more seeds per prompt; every subject scored needs all 25 prompts)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SqueezeInputError

LIVE_CLASSES = ("cat", "dog")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
GENERATED_NAME = re.compile(r"^(\d{2})_(\d+)$")


@dataclass
class Subject:
    name: str
    class_word: str
    images: list[Path]  # every real photo, file-name order
    prompts: list[str]  # 25, with the class word

    @property
    def reference(self) -> Path:
        return self.images[0]

    @property
    def live(self) -> bool:
        return self.class_word in LIVE_CLASSES


@dataclass
class DreamBench:
    root: Path
    subjects: dict[str, Subject] = field(default_factory=dict)

    @classmethod
    def load(cls, root, subjects=None) -> "DreamBench":
        root = Path(root)
        listing = root / "prompts_and_classes.txt"
        if not listing.is_file():
            raise SqueezeInputError(f"'{root}' is not a DreamBench folder: it has no prompts_and_classes.txt.")
        classes, object_prompts, live_prompts = parse_prompts_and_classes(listing.read_text(encoding="utf-8"))
        wanted = list(classes) if subjects is None else list(subjects)
        unknown = [s for s in wanted if s not in classes]
        if unknown:
            raise SqueezeInputError(f"unknown DreamBench subjects {unknown}; known: {sorted(classes)}.")
        bench = cls(root)
        for name in wanted:
            images = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise SqueezeInputError(f"DreamBench subject '{name}' has no images in '{root / name}'.")
            templates = live_prompts if classes[name] in LIVE_CLASSES else object_prompts
            prompts = [" ".join(t.format("", classes[name]).split()) for t in templates]
            bench.subjects[name] = Subject(name, classes[name], images, prompts)
        return bench


def parse_prompts_and_classes(text: str) -> tuple[dict[str, str], list[str], list[str]]:
    """DreamBooth's prompts_and_classes.txt -> ({subject: class}, object templates, live templates)."""
    classes = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] and parts[0] != "subject_name" and " " not in parts[0]:
            classes[parts[0]] = parts[1]
    lists = re.findall(r"prompt_list = \[(.*?)\]", text, flags=re.S)
    templates = [re.findall(r"'([^']*)'\.format\(unique_token, class_token\)", block) for block in lists]
    if not classes or len(templates) != 2 or not all(len(t) == 25 for t in templates):
        raise SqueezeInputError("prompts_and_classes.txt is not in DreamBooth's format (classes, then two lists of 25 prompts).")
    return classes, templates[0], templates[1]


def generated_path(folder, subject: str, prompt_index: int, seed: int, suffix: str = ".png") -> Path:
    return Path(folder) / subject / f"{prompt_index:02d}_{seed}{suffix}"


def collect_generated(folder, bench: DreamBench, prompt_indices=None) -> dict[str, dict[int, list[Path]]]:
    """{subject: {prompt index: [image paths]}} for the documented layout; an incomplete folder is an error that
    names every missing subject and prompt. `prompt_indices` limits what is expected and read (default: all 25)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SqueezeInputError(f"generated folder '{folder}' does not exist.")
    found, problems = {}, []
    for name, subject in bench.subjects.items():
        by_prompt: dict[int, list[Path]] = {}
        for path in sorted((folder / name).glob("*")) if (folder / name).is_dir() else []:
            match = GENERATED_NAME.match(path.stem)
            wanted = range(len(subject.prompts)) if prompt_indices is None else prompt_indices
            if path.suffix.lower() in IMAGE_SUFFIXES and match and int(match.group(1)) in wanted:
                by_prompt.setdefault(int(match.group(1)), []).append(path)
        if not by_prompt:
            problems.append(f"subject '{name}' has no images")
            continue
        missing = [i for i in (range(len(subject.prompts)) if prompt_indices is None else prompt_indices) if i not in by_prompt]
        if missing:
            problems.append(f"subject '{name}' lacks prompts {missing}")
        found[name] = by_prompt
    if problems:
        raise SqueezeInputError(
            f"generated folder '{folder}' is incomplete: " + "; ".join(problems)
            + ". Expected <subject>/<prompt index>_<seed>.png for every prompt (see squeeze_core/eval/dreambench.py)."
        )
    return found
