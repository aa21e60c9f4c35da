"""Two-stage training of the DLA and the FLUX LoRA (paper 3.5 and 4.1); see docs/training.md.

    from squeeze_core.train import TrainConfig, train
    result = train(TrainConfig.from_file("stage1.yaml"))      # stage 1: MLLM-only conditioning
    result = train(TrainConfig.from_file("stage2.yaml"))      # stage 2: + VAE references, init_from the stage-1 output
"""

from .config import TrainConfig


def __getattr__(name: str):  # the trainer (torch, accelerate, peft) loads on first use, not with the config
    if name in ("TrainResult", "train"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["TrainConfig", "TrainResult", "train"]
