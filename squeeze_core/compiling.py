"""Optional `torch.compile` of the FLUX transformer for headless runs (`squeeze generate --compile`, and eval/ablate):

    check_compile("cuda")                    # before anything loads: Triton for a CUDA device, a C++ compiler on the CPU
    compile_transformer(pipe.transformer)    # in place, after the LoRA is merged and any quantization applied

The module stays the same object (`nn.Module.compile`), so moving it between devices (--offload-mllm) and reading
its weights work as before. The first step of each new shape compiles: a staged run meets a few (the context with
and without reference tokens, the negative), so compiling pays off over many images, seeds or steps, not for one
small image. ComfyUI has its own compile nodes; the pack leaves that to them.
"""

from __future__ import annotations

import logging
import os
import shutil

import torch

from .errors import SqueezeInputError

logger = logging.getLogger("squeeze.compiling")


def check_compile(device, what: str = "--compile") -> None:
    """What inductor, torch.compile's default backend, needs for `device`; an error that says what to do."""
    device = torch.device(device)
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise SqueezeInputError(f"{what} on a CUDA device needs Triton, which this torch installation lacks: pip install "
                                    f"triton (the version your torch release names), or leave {what} off.")
    elif device.type == "cpu":
        compiler = os.environ.get("CXX") or "g++"
        if shutil.which(compiler) is None and shutil.which("clang++") is None:
            raise SqueezeInputError(f"{what} on the CPU needs a C++ compiler ({compiler} or clang++ on the PATH, or $CXX): "
                                    f"install one (e.g. apt install g++), or leave {what} off.")


def compile_transformer(transformer: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """Compile the transformer's forward in place; returns it. `backend` is torch.compile's (tests use a cheap one)."""
    transformer.compile(backend=backend)
    logger.info("FLUX transformer compiled with torch.compile (backend %s); each new shape compiles on its first step", backend)
    return transformer
