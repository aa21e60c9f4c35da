"""DLA weights: one safetensors file whose metadata says what it is and which MLLM it was made for.

Metadata keys (all strings, as safetensors requires):
    squeeze.format      "dla"
    squeeze.version     format version, "1"
    squeeze.dla_config  JSON of DLAConfig
    squeeze.mllm        JSON {"model_type", "num_layers", "hidden_size", "name"} of the MLLM it was trained with

Writes are atomic (a temporary file in the same folder, then a rename), so a crash never leaves half a file.
Loading checks everything before building the module and names what is wrong: a missing file (and where it goes),
a file that is not a Squeeze DLA, missing / unexpected / mis-shaped tensors, and an MLLM mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .dla import DLAConfig, DualLayerAggregator
from .errors import SqueezeWeightsError
from .files import atomic_write
from .mllm import MLLMInfo

FORMAT = "dla"
FORMAT_VERSION = "1"
DLA_PLACEMENT_HINT = "DLA weights are one .safetensors file (in ComfyUI: models/squeeze/)."


def atomic_save_safetensors(tensors: dict, path, metadata: dict) -> None:
    """save_file through files.atomic_write: readers only ever see a complete file, and equal tensors and metadata
    always give the same bytes (see `sort_safetensors_header`)."""

    def write(temporary) -> None:
        save_file(tensors, str(temporary), metadata=metadata)
        sort_safetensors_header(temporary)

    atomic_write(path, write)


def sort_safetensors_header(path) -> None:
    """Rewrite a safetensors file's JSON header in place with its keys sorted. safetensors writes the metadata map in
    hash order, which changes from save to save, so without this two saves of the same weights differ in bytes (and
    sha256). The sorted header is never longer (same content, compact either way) and is padded with spaces to the
    old length, which the format allows, so the tensor data does not move."""
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:  # not expected; the file as written is still valid, only not byte-reproducible
            return
        handle.seek(8)
        handle.write(text + b" " * (size - len(text)))


def save_dla(dla: DualLayerAggregator, path, mllm: MLLMInfo | None = None) -> None:
    """Save the DLA and, in the metadata, its config and the MLLM it belongs to (defaults to its config's)."""
    mllm = mllm or dla.config.mllm_info()
    if not dla.config.mllm_info().matches(mllm):
        raise SqueezeWeightsError(
            f"refusing to save: the DLA is built for {dla.config.mllm_info().describe()} but was told its MLLM is "
            f"{mllm.describe()}."
        )
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in dla.state_dict().items()}
    metadata = {
        "squeeze.format": FORMAT,
        "squeeze.version": FORMAT_VERSION,
        "squeeze.dla_config": json.dumps(dla.config.to_dict(), sort_keys=True),
        "squeeze.mllm": json.dumps(
            {"model_type": mllm.model_type, "num_layers": mllm.num_layers, "hidden_size": mllm.hidden_size, "name": mllm.name,
             "text_model_type": mllm.text_model_type, "vocab_size": mllm.vocab_size},
            sort_keys=True,
        ),
    }
    atomic_save_safetensors(tensors, path, metadata)


def read_dla_metadata(path) -> tuple[DLAConfig, MLLMInfo]:
    """The config and MLLM recorded in a DLA file, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise SqueezeWeightsError(f"DLA weights file '{path}' does not exist. {DLA_PLACEMENT_HINT}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise SqueezeWeightsError(f"'{path}' is not a readable safetensors file ({error}). {DLA_PLACEMENT_HINT}") from error
    if metadata.get("squeeze.format") != FORMAT:
        raise SqueezeWeightsError(
            f"'{path}' is not a Squeeze DLA file (its metadata has no squeeze.format='dla'); it may be a LoRA or "
            f"another model's weights. {DLA_PLACEMENT_HINT}"
        )
    if metadata.get("squeeze.version") != FORMAT_VERSION:
        raise SqueezeWeightsError(
            f"'{path}' is DLA format version {metadata.get('squeeze.version')!r}; this Squeeze reads version "
            f"{FORMAT_VERSION}. Update Squeeze."
        )
    try:
        config = DLAConfig.from_dict(json.loads(metadata["squeeze.dla_config"]))
        mllm = json.loads(metadata["squeeze.mllm"])
        info = MLLMInfo(mllm["model_type"], int(mllm["num_layers"]), int(mllm["hidden_size"]), mllm.get("name", ""),
                        mllm.get("text_model_type", ""), int(mllm.get("vocab_size", 0)))
    except (KeyError, TypeError, ValueError) as error:
        raise SqueezeWeightsError(f"'{path}' has broken Squeeze metadata ({error!r}); re-export the DLA.") from error
    return config, info


def check_dla_made_for(path, made_for: MLLMInfo, mllm: MLLMInfo, mllm_label: str = "the loaded MLLM") -> None:
    """The recorded MLLM of a DLA file against an MLLM (loaded, or read from its config.json before loading)."""
    if not made_for.matches(mllm):
        raise SqueezeWeightsError(
            f"DLA weights '{Path(path).name}' were made for {made_for.describe()}, but {mllm_label} is {mllm.describe()}. "
            "Load the MLLM these weights were trained with, or DLA weights trained for this MLLM."
        )


def load_dla(path, mllm: MLLMInfo | None = None, device="cpu", dtype: torch.dtype = torch.float32) -> DualLayerAggregator:
    """Load a DLA file; with `mllm`, first check it was made for that MLLM (error names both)."""
    path = Path(path)
    config, made_for = read_dla_metadata(path)
    if mllm is not None:
        check_dla_made_for(path, made_for, mllm)
    dla = DualLayerAggregator(config)
    expected = dla.state_dict()
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        missing = sorted(set(expected) - names)
        unexpected = sorted(names - set(expected))
        if missing or unexpected:
            raise SqueezeWeightsError(
                f"DLA weights '{path}' do not fit the DLA described by its own metadata: "
                f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}. The file is damaged or was "
                "edited; re-export it."
            )
        state = {}
        for name in sorted(names):
            tensor = handle.get_tensor(name)
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise SqueezeWeightsError(
                    f"DLA weights '{path}': tensor {name!r} has shape {tuple(tensor.shape)}, expected "
                    f"{tuple(expected[name].shape)}. The file is damaged or was edited; re-export it."
                )
            state[name] = tensor
    dla.load_state_dict(state, strict=True)
    return dla.to(device=device, dtype=dtype).eval()
