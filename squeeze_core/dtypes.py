"""The dtype names Squeeze accepts (CLI options, training configs, node inputs) and the torch dtypes they mean.

DTYPE_NAMES needs no torch (the command line's choices); DTYPES, the name -> torch.dtype map, imports torch when it
is first read."""

DTYPE_NAMES = ("bfloat16", "float16", "float32")


def __getattr__(name: str):
    if name == "DTYPES":
        import torch

        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
