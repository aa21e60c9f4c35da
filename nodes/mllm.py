"""SqueezeMLLMLoader: an InternVL3 directory under ComfyUI's memory manager."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import comfy.model_management
import comfy.model_patcher
import torch
from comfy_api.latest import io

from ..squeeze_core.conditioning import KeptEncodings
from ..squeeze_core.dtypes import DTYPES
from ..squeeze_core.errors import SqueezeError
from ..squeeze_core.mllm import InternVL3Encoder, check_mllm_dir
from .folders import missing_mllm_message, mllm_directories, mllm_path

logger = logging.getLogger("squeeze.nodes")

SqueezeMLLMType = io.Custom("SQUEEZE_MLLM")


class MLLMModule(torch.nn.Module):
    """The transformers model as ModelPatcher wants it: ModelPatcher writes `model.device`, which transformers
    models expose as a read-only property, so the patcher gets this plain holder module instead."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.mllm = model
        self.device = device


@dataclass
class SqueezeMLLM:
    """The loaded MLLM as the nodes share it. By default it is a model like any other under ComfyUI's memory
    manager: loaded for the first encode, kept on the compute device while it fits, and evicted by the manager only
    when sampling needs the room, so a second encode (the negative, another prompt) moves nothing.
    `offload_after_encode` hands the memory back after every encode instead (for cards where FLUX needs it all).
    `prompt_only` keeps the 16 latest prompt-only encodings per DLA file, so the empty negative is encoded once per MLLM and DLA and
    needs no load afterwards, even with offload_after_encode.
    `bytes_moved` counts the weight bytes loaded onto and taken off the compute device by this node pack's calls."""

    encoder: InternVL3Encoder
    patcher: comfy.model_patcher.ModelPatcher
    offload_after_encode: bool = False
    bytes_moved: int = 0
    prompt_only: KeptEncodings = field(default_factory=lambda: KeptEncodings(16))  # (DLA file, system prompt, prompt) -> on the CPU

    def load(self) -> None:
        """Load onto the compute device for encoding. Fully: transformers layers cannot run half-offloaded."""
        before = self.patcher.loaded_size()
        comfy.model_management.load_models_gpu([self.patcher], force_full_load=True)
        self.bytes_moved += max(self.patcher.loaded_size() - before, 0)

    def offload(self) -> None:
        """With offload_after_encode: hand the memory back before sampling, through the manager's own unload path."""
        if not self.offload_after_encode:
            return
        loaded = comfy.model_management.current_loaded_models
        for index in range(len(loaded) - 1, -1, -1):
            if loaded[index].model is self.patcher:
                self.bytes_moved += self.patcher.loaded_size()
                loaded[index].model_unload()
                loaded.pop(index)
        comfy.model_management.soft_empty_cache()


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    return torch.bfloat16 if comfy.model_management.should_use_bf16(device) else torch.float32


def load_mllm(path: str, dtype_name: str = "auto", offload_after_encode: bool = False) -> SqueezeMLLM:
    load_device = comfy.model_management.text_encoder_device()
    offload_device = comfy.model_management.text_encoder_offload_device()
    dtype = resolve_dtype(dtype_name, load_device)
    encoder = InternVL3Encoder.from_pretrained(path, dtype=dtype, device=offload_device)
    patcher = comfy.model_patcher.ModelPatcher(MLLMModule(encoder.model, offload_device), load_device=load_device,
                                               offload_device=offload_device)
    logger.info("loaded %s as %s (compute on %s)", encoder.info.describe(), dtype, load_device)
    return SqueezeMLLM(encoder, patcher, offload_after_encode)


class SqueezeMLLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SqueezeMLLMLoader",
            display_name="Squeeze MLLM Loader (InternVL3)",
            category="Squeeze",
            description="Loads an InternVL3 checkpoint in the transformers '-hf' layout from models/mllm/.",
            inputs=[
                io.Combo.Input("mllm_name", options=mllm_directories(),
                               tooltip="An InternVL3 '-hf' directory in models/mllm/ (1B to 78B; the DLA weights must match it)."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Weight dtype. auto: bfloat16 where the device supports it, else float32."),
                io.Boolean.Input("offload_after_encode", default=False,
                                 tooltip="Off (default): the MLLM stays on the GPU while it fits and ComfyUI evicts it only "
                                         "when sampling needs the room, so repeated encodes move nothing. On: give its "
                                         "memory back right after every encode."),
            ],
            outputs=[SqueezeMLLMType.Output(display_name="mllm", tooltip="The loaded MLLM, for Squeeze DLA Encode.")],
        )

    @classmethod
    def validate_inputs(cls, mllm_name):
        # Replaces ComfyUI's own "value not in list" check so the message says where the model goes.
        path = mllm_path(mllm_name)
        if path is None:
            return missing_mllm_message(mllm_name)
        try:  # config.json, weights and tokenizer files present: read, not loaded
            check_mllm_dir(path)
        except SqueezeError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, mllm_name, dtype, offload_after_encode) -> io.NodeOutput:
        path = mllm_path(mllm_name)
        if path is None:
            raise FileNotFoundError(missing_mllm_message(mllm_name))
        return io.NodeOutput(load_mllm(path, dtype, offload_after_encode))
