"""ComfyUI adapters: each node unpacks ComfyUI types, calls squeeze_core, and wraps the result."""

from comfy_api.latest import ComfyExtension, io

from .dla_encode import SqueezeDLAEncode
from .folders import register_model_folders
from .mini import SqueezeMiniModels, SqueezeMiniReference
from .mllm import SqueezeMLLMLoader
from .reference_latents import SqueezeReferenceLatents
from .sheet import SqueezeComparisonSheet
from .staged import SqueezeCosineScheduler, SqueezeStagedGuider, SqueezeStagedSampler

NODES = [
    SqueezeMLLMLoader,
    SqueezeDLAEncode,
    SqueezeReferenceLatents,
    SqueezeStagedSampler,
    SqueezeStagedGuider,
    SqueezeCosineScheduler,
    SqueezeMiniModels,
    SqueezeMiniReference,
    SqueezeComparisonSheet,
]


class SqueezeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_model_folders()
        return NODES


async def comfy_entrypoint() -> SqueezeExtension:
    return SqueezeExtension()
