"""Squeeze for ComfyUI: MLLM-conditioned, subject-driven FLUX generation.

ComfyUI imports this folder from custom_nodes/ and awaits `comfy_entrypoint`. Importing the folder loads nothing:
the nodes (and the models/mllm, models/squeeze folders) are set up only when ComfyUI asks for them.
"""


async def comfy_entrypoint():
    from .nodes import comfy_entrypoint as nodes_entrypoint

    return await nodes_entrypoint()
