"""Weight-only quantization of the frozen models for inference, through torchao (a PyTorch library; `pip install torchao`,
or `pip install ".[quant]"` in a clone), so that InternVL3-8B and FLUX.1-dev fit the cards people have:

    quantize_weights(pipe.transformer, "fp8")        # FLUX.1-dev's 11.9 B weights: 22.2 GiB in bf16 -> about 11.1 GiB
    quantize_weights(encoder.model.language_model, "int8")   # InternVL3-8B's LLM: about 14 GiB -> about 7 GiB

- "int8": int8 weights with a scale per output channel, dequantised in each matmul; any device (also the CPU).
- "fp8": float8 (e4m3) weights, per channel; CUDA GPUs with fp8 support (compute capability 8.9+: Ada, Hopper).
Only `nn.Linear` layers are quantized (every matmul of FLUX's blocks and of the LLM); embeddings, norms and the
vision tower stay as loaded. Quantize after the LoRA is merged (SqueezePipeline merges it), never before training.
Checks come first: an unknown scheme, a missing torchao or a device without fp8 is an error that says what to do.
"""

from __future__ import annotations

import logging

import torch

from .errors import SqueezeInputError

logger = logging.getLogger("squeeze.quantization")

SCHEMES = ("none", "int8", "fp8")


def check_scheme(scheme: str, device, what: str) -> None:
    """Before anything loads: the scheme exists, torchao is installed, fp8 has a GPU that computes it."""
    if scheme not in SCHEMES:
        raise SqueezeInputError(f"{what}={scheme!r} is not one of {SCHEMES}.")
    if scheme == "none":
        return
    try:
        import torchao  # noqa: F401
    except ImportError as error:
        raise SqueezeInputError(f"{what}={scheme} needs torchao: pip install torchao (in a clone of the pack: pip install "
                                "\".[quant]\"), or leave it at none.") from error
    if scheme == "fp8":
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available() or torch.cuda.get_device_capability(device) < (8, 9):
            raise SqueezeInputError(f"{what}=fp8 needs a CUDA GPU with fp8 support (compute capability 8.9 or newer: Ada, "
                                    f"Hopper); the device is {device}. Use int8, which runs anywhere.")


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters as stored (quantized tensors count their int8 / fp8 data and scales)."""
    total = 0
    for parameter in module.parameters():
        tensors = [parameter]
        if hasattr(parameter, "__tensor_flatten__"):  # a torchao tensor subclass: its inner tensors hold the bytes
            names, _ = parameter.__tensor_flatten__()
            tensors = [getattr(parameter, name) for name in names]
        total += sum(_tensor_bytes(t) for t in tensors)
    return total


def _tensor_bytes(tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def quantize_weights(module: torch.nn.Module, scheme: str) -> int:
    """Quantize every nn.Linear of `module` in place -> the number of layers quantized (0 for "none")."""
    if scheme == "none":
        return 0
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    layers = sum(isinstance(m, torch.nn.Linear) for m in module.modules())
    before = weight_bytes(module)
    quantize_(module, Int8WeightOnlyConfig() if scheme == "int8" else Float8WeightOnlyConfig())
    logger.info("quantized %d linear layers to %s weights: %.2f -> %.2f GiB", layers, scheme, before / 2**30,
                weight_bytes(module) / 2**30)
    return layers
