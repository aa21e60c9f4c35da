"""The dtype names Squeeze accepts (CLI options, training configs, node inputs) and the torch dtypes they mean."""

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
