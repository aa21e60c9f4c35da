"""Training checkpoints: one directory per checkpoint, written whole or not at all, safetensors and JSON only.

    output_dir/checkpoint-00001000/
        squeeze_dla.safetensors        the DLA      (ComfyUI: models/squeeze/)   -- ready to use as they are
        squeeze_flux_lora.safetensors  the LoRA     (ComfyUI: models/loras/)
        train_config.json              the settings this run was started with
        optimizer.safetensors          AdamW moments; param groups in the metadata
        rank-0.safetensors ...         per process: its random-generator state, data position, skip counts
        trainer_state.json             step and process count; written last

A checkpoint is assembled in `.checkpoint-XXXXXXXX.tmp/` and renamed into place, so a run killed at any moment leaves
either a complete checkpoint or a leftover temporary directory that the next run removes. Only the newest
`keep_checkpoints` are kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import SqueezeWeightsError
from ..weights import atomic_save_safetensors

logger = logging.getLogger("squeeze.train")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d{8})$")
STATE_FILE, OPTIMIZER_FILE = "trainer_state.json", "optimizer.safetensors"


def checkpoint_dir(output_dir, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step:08d}"


def temporary_dir(output_dir, step: int) -> Path:
    return Path(output_dir) / f".checkpoint-{step:08d}.tmp"


def list_checkpoints(output_dir) -> list[Path]:
    """Complete checkpoints, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def remove_leftovers(output_dir) -> None:
    for path in Path(output_dir).glob(".checkpoint-*.tmp"):
        logger.info("removing an incomplete checkpoint left by an interrupted run: %s", path)
        shutil.rmtree(path, ignore_errors=True)


def publish(temporary: Path, final: Path, keep: int) -> None:
    """Rename the assembled checkpoint into place, then prune to the newest `keep`."""
    if final.exists():  # the same step saved again after a resume
        shutil.rmtree(final)
    os.replace(temporary, final)
    for old in list_checkpoints(final.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# -------------------------------------------------------------------------------------------------- optimizer state
def save_optimizer(optimizer, path) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    metadata = {"squeeze.format": "optimizer", "param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    atomic_save_safetensors(tensors, path, metadata)


def load_optimizer(optimizer, path) -> None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise SqueezeWeightsError(f"optimizer state '{path}' is unreadable ({error}); resume from another checkpoint.") from error
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for name, value in json.loads(metadata["scalars"]).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = json.loads(metadata["param_groups"])
    current = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
        raise SqueezeWeightsError(f"optimizer state '{path}' is for other trainable parameters than this run's.")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------------------------------------- process state
def save_rank_state(path, generator: torch.Generator, data_state: dict) -> None:
    atomic_save_safetensors({"generator": generator.get_state()}, path, {"data_state": json.dumps(data_state)})


def load_rank_state(path, generator: torch.Generator) -> dict:
    if not Path(path).is_file():
        raise SqueezeWeightsError(f"checkpoint file '{path}' is missing: resume with as many processes as wrote it.")
    with safe_open(str(path), framework="pt") as handle:
        generator.set_state(handle.get_tensor("generator"))
        return json.loads((handle.metadata() or {})["data_state"])


def read_trainer_state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SqueezeWeightsError(f"'{checkpoint}' is not a Squeeze training checkpoint ({error}).") from error
