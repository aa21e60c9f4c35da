"""Model folders the pack adds to ComfyUI: models/mllm/ (InternVL3 directories) and models/squeeze/ (DLA weights)."""

from __future__ import annotations

import os

import folder_paths

MLLM_FOLDER = "mllm"  # models/mllm/<InternVL3-*-hf>/ : transformers "-hf" checkpoint directories
SQUEEZE_FOLDER = "squeeze"  # models/squeeze/*.safetensors : DLA weights
WEIGHT_EXTENSIONS = {".safetensors"}


def register_model_folders() -> None:
    """Add our keys to folder_paths, merging with paths a user set in extra_model_paths.yaml (never overwriting)."""
    for key in (MLLM_FOLDER, SQUEEZE_FOLDER):
        folder_paths.add_model_folder_path(key, os.path.join(folder_paths.models_dir, key))
    paths, extensions = folder_paths.folder_names_and_paths[SQUEEZE_FOLDER]
    folder_paths.folder_names_and_paths[SQUEEZE_FOLDER] = (paths, set(extensions) | WEIGHT_EXTENSIONS)


def mllm_directories() -> list[str]:
    """Names of the checkpoint directories (those with a config.json) in every registered mllm folder."""
    names = set()
    for root in folder_paths.get_folder_paths(MLLM_FOLDER):
        if os.path.isdir(root):
            names.update(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "config.json")))
    return sorted(names)


def mllm_path(name: str) -> str | None:
    """The checkpoint directory `name` directly inside a registered mllm folder, or None. A name is one entry of the
    folder: one with a path separator, '..' or an absolute path is never looked up, so no input reaches a directory
    outside the model folders (an entry that is a symlink, put there by whoever owns the machine, is followed, as
    ComfyUI follows them in every model folder)."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(sep in name for sep in ("/", "\\", os.sep)) \
            or os.path.isabs(name):
        return None
    for root in folder_paths.get_folder_paths(MLLM_FOLDER):
        candidate = os.path.join(root, name)
        if os.path.isdir(candidate):
            return candidate
    return None


def squeeze_weight_files() -> list[str]:
    return folder_paths.get_filename_list(SQUEEZE_FOLDER)


def missing_mllm_message(name: str) -> str:
    folders = ", ".join(folder_paths.get_folder_paths(MLLM_FOLDER))
    return (
        f"MLLM '{name}' not found. Put the InternVL3 '-hf' checkpoint directory (e.g. InternVL3-8B-hf/ with config.json, "
        f"*.safetensors, tokenizer and preprocessor files) in models/mllm/ (searched: {folders})."
    )


def missing_dla_message(name: str) -> str:
    folders = ", ".join(folder_paths.get_folder_paths(SQUEEZE_FOLDER))
    return f"DLA weights '{name}' not found. Put the .safetensors file in models/squeeze/ (searched: {folders})."
