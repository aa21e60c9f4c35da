"""SqueezeMLLMLoader: an InternVL3 directory under ComfyUI's memory manager."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import comfy.cli_args
import comfy.model_management
import comfy.model_patcher
import torch
from comfy_api.latest import io

from ..squeeze_core.conditioning import KeptEncodings
from ..squeeze_core.dtypes import DTYPES
from ..squeeze_core.errors import SqueezeError
from ..squeeze_core.host_copy import HostCopy
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


class MLLMPatcher(comfy.model_patcher.ModelPatcher):
    """ModelPatcher for an MLLM whose weights never change on the GPU. With a host copy (HostCopy, kept from the
    first eviction, or from the start with offload_after_encode), an eviction points the weights back at the kept
    copy instead of copying them off the GPU, and a full load copies them from pinned memory. Weight patches on this
    model (nothing in the pack adds any) turn the host copy off: ComfyUI's own moves then apply. Overridden are the
    three calls through which ComfyUI moves a model's weights (load, unpatch_model, partially_unload); each adds
    its step and hands on to ModelPatcher, so ComfyUI's bookkeeping stays its own."""

    def __init__(self, *args, host_copy: HostCopy | None = None, **kwargs):  # ModelPatcher's own arguments first
        super().__init__(*args, **kwargs)
        self.host_copy = host_copy

    def clone(self, *args, **kwargs):
        clone = super().clone(*args, **kwargs)
        clone.host_copy = self.host_copy  # a clone shares the model, so it shares the copy
        return clone

    def _host_copy_applies(self) -> bool:
        return self.host_copy is not None and not self.patches and not self.backup

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False, **kwargs):
        if full_load and device_to is not None and self._host_copy_applies():
            self.host_copy.to_device(device_to)  # ComfyUI's own moves then find every weight in place
        return super().load(device_to, lowvram_model_memory=lowvram_model_memory,
                            force_patch_weights=force_patch_weights, full_load=full_load, **kwargs)

    def unpatch_model(self, device_to=None, unpatch_weights=True, **kwargs):
        if unpatch_weights and device_to is not None and torch.device(device_to).type == "cpu" and self._host_copy_applies():
            self.host_copy.to_host()
        return super().unpatch_model(device_to, unpatch_weights, **kwargs)

    def partially_unload(self, device_to, memory_to_free=0, *args, **kwargs):
        if not (self._host_copy_applies() and torch.device(device_to).type == "cpu"):
            return super().partially_unload(device_to, memory_to_free, *args, **kwargs)
        # ComfyUI's usual eviction, when sampling needs room: it would copy off modules one by one, but transformers
        # layers cannot run half-loaded (every encode loads the whole MLLM), and with the kept copy letting all of it
        # go copies nothing. ComfyUI's bookkeeping then marks every module unloaded (its moves find them in place).
        self.host_copy.to_host()
        loaded = self.loaded_size()
        super().partially_unload(device_to, loaded, *args, **kwargs)
        self.model.model_loaded_weight_memory = 0  # ComfyUI leaves out the weights of non-leaf modules: they left too
        return loaded


@dataclass
class SqueezeMLLM:
    """The loaded MLLM as the nodes share it. By default it is a model like any other under ComfyUI's memory
    manager: loaded for the first encode, kept on the compute device while it fits, and evicted by the manager only
    when sampling needs the room, so a second encode (the negative, another prompt) moves nothing.
    `offload_after_encode` hands the memory back after every encode instead (for cards where FLUX needs it all).
    `prompt_only` keeps the 16 latest prompt-only encodings per DLA file, so the empty negative is encoded once per MLLM and DLA and
    needs no load afterwards, even with offload_after_encode.
    `bytes_moved` counts the weight bytes loaded onto and taken off the compute device by this node pack's calls;
    with a host copy, those taken off are not copied (`patcher.host_copy` counts the bytes copied either way)."""

    encoder: InternVL3Encoder
    patcher: MLLMPatcher
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


def pinning_allowed(device: torch.device, size: int) -> bool:
    """Pinned host memory for a copy of `size` bytes onto `device`: CUDA only, not when ComfyUI runs with
    --disable-pinned-memory, and only within what ComfyUI allows itself to pin (a share of RAM) less what it holds."""
    if torch.device(device).type != "cuda" or getattr(comfy.cli_args.args, "disable_pinned_memory", False):
        return False
    limit = getattr(comfy.model_management, "MAX_PINNED_MEMORY", None)  # ComfyUI releases that pin weights have it
    if limit is None:
        return True
    return size <= limit - getattr(comfy.model_management, "TOTAL_PINNED_MEMORY", 0)


def mllm_patcher(model: torch.nn.Module, load_device, offload_device, keep_host_copy: bool = True,
                 offload_after_encode: bool = False) -> MLLMPatcher:
    module = MLLMModule(model, offload_device)
    host_copy = None
    if keep_host_copy and torch.device(load_device) != torch.device(offload_device) and torch.device(offload_device).type == "cpu":
        host_copy = HostCopy(module, pin=pinning_allowed(load_device, comfy.model_management.module_size(module)))
        if offload_after_encode:  # evicted after every encode: keep the loaded weights as the copy right away
            host_copy.keep_current()
    return MLLMPatcher(module, load_device, offload_device, host_copy=host_copy)


def load_mllm(path: str, dtype_name: str = "auto", offload_after_encode: bool = False,
              keep_host_copy: bool = True) -> SqueezeMLLM:
    load_device = comfy.model_management.text_encoder_device()
    offload_device = comfy.model_management.text_encoder_offload_device()
    dtype = resolve_dtype(dtype_name, load_device)
    encoder = InternVL3Encoder.from_pretrained(path, dtype=dtype, device=offload_device)
    patcher = mllm_patcher(encoder.model, load_device, offload_device, keep_host_copy, offload_after_encode)
    logger.info("loaded %s as %s (compute on %s%s)", encoder.info.describe(), dtype, load_device,
                ", host copy kept" if patcher.host_copy is not None else "")
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
                io.Boolean.Input("keep_host_copy", default=True, optional=True,
                                 tooltip="On (default): once the MLLM has left the GPU, a copy stays in (pinned) RAM, so "
                                         "later evictions copy nothing and a reload is one fast copy; it costs the "
                                         "MLLM's size in RAM also while it is on the GPU. Off: ComfyUI's usual moves."),
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
    def execute(cls, mllm_name, dtype, offload_after_encode, keep_host_copy=True) -> io.NodeOutput:
        path = mllm_path(mllm_name)
        if path is None:
            raise FileNotFoundError(missing_mllm_message(mllm_name))
        return io.NodeOutput(load_mllm(path, dtype, offload_after_encode, keep_host_copy))
