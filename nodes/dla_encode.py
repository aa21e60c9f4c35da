"""SqueezeDLAEncode: prompt + reference images -> FLUX conditioning through InternVL3 and the DLA."""

from __future__ import annotations

import copy
import os

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..squeeze_core.checks import safetensors_file
from ..squeeze_core.conditioning import encode_for_phases
from ..squeeze_core.dla import DLAOutput, DualLayerAggregator
from ..squeeze_core.embedded import EmbeddedModels
from ..squeeze_core.errors import SqueezeError
from ..squeeze_core.images import ASPECT_MODES, to_image_batch
from ..squeeze_core.mllm import EncoderConfig
from ..squeeze_core.phases import PhaseConditioning
from ..squeeze_core.plots import layer_weight_chart
from ..squeeze_core.references import check_image_batch
from ..squeeze_core.weights import check_dla_made_for, load_dla, read_dla_metadata
from .folders import SQUEEZE_FOLDER, missing_dla_message, squeeze_weight_files
from .mllm import SqueezeMLLM, SqueezeMLLMType

MAX_IMAGE_INPUTS = 4
# the `dla_name` choice of the DLA that ships inside the pack, trained for the embedded mini InternVL3
EMBEDDED_DLA = "squeeze mini DLA (embedded)"
_dla_cache: dict = {}


def dla_choices() -> list[str]:
    """The DLA files in models/squeeze, then the embedded mini DLA (last, so a real file stays the default)."""
    return [*squeeze_weight_files(), EMBEDDED_DLA]


def dla_path(name: str) -> str | None:
    """The file behind a `dla_name` choice; None when models/squeeze has no such file."""
    if name == EMBEDDED_DLA:
        return str(EmbeddedModels.packaged().dla)
    return folder_paths.get_full_path(SQUEEZE_FOLDER, name)


def dla_file_key(path: str) -> tuple:
    """Which DLA weights a file holds, as far as a cache needs to know: its real path, size and modification time."""
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


def cached_dla(path: str, mllm_info) -> DualLayerAggregator:
    """Load a DLA file once per (path, size, mtime); the check against the MLLM runs every time."""
    key = dla_file_key(path)
    if key not in _dla_cache:
        _dla_cache.clear()
        _dla_cache[key] = load_dla(path)
    dla = _dla_cache[key]
    dla.check_mllm(mllm_info, weights_name=f"DLA weights '{os.path.basename(path)}'")
    check_dla_made_for(path, read_dla_metadata(path)[1], mllm_info)  # its language model too; metadata only, so cheap
    return dla


def to_conditioning(output: DLAOutput) -> list:
    """A DLA output item -> ComfyUI CONDITIONING (pooled_output is always set: FLUX needs its `y`)."""
    device = comfy.model_management.intermediate_device()
    return [[output.context.to(device), {"pooled_output": output.pooled.to(device)}]]


def chart_to_image(output: DLAOutput) -> torch.Tensor:
    chart = layer_weight_chart(output.layer_weights[0], output.token_types[0])
    return to_image_batch(chart)


def split_references(images: list) -> list[torch.Tensor]:
    """The connected IMAGE inputs, in order -> one (H, W, 3) tensor per reference (a batch holds several)."""
    references = []
    for slot, batch in enumerate(images, start=1):
        if batch is not None:
            references.extend(check_image_batch(batch, name=f"image_{slot}").cpu().unbind(0))
    return references


def encode(mllm: SqueezeMLLM, dla_path: str, prompt: str, images: list, aspect_mode: str = "pad", max_references: int = 4):
    progress = comfy.utils.ProgressBar(3)
    references = split_references(images)
    # a copy with this node's settings: the MLLM object is shared with every other node that uses it
    encoder = copy.copy(mllm.encoder)
    encoder.config = EncoderConfig(max_references=max_references, aspect_mode=aspect_mode)
    dla = cached_dla(dla_path, encoder.info)
    key = (dla_file_key(dla_path), encoder.config.system_prompt, prompt)
    prompt_only = mllm.prompt_only.get(key)
    if prompt_only is not None and not references:  # e.g. the empty negative: kept, so the MLLM is not loaded
        staged = PhaseConditioning(prompt_only, prompt_only, prompt_only)
    else:
        mllm.load()
        progress.update(1)
        try:
            comfy.model_management.throw_exception_if_processing_interrupted()
            dla.to(mllm.encoder.device)
            staged = encode_for_phases(encoder, dla, prompt, references, prompt_only)
            progress.update(1)
        finally:
            dla.to("cpu")
            mllm.offload()
        mllm.prompt_only.put(key, staged.late.to("cpu"))
    progress.update_absolute(3)
    # outputs `conditioning` (the first and middle phases' MLLM side) and `prompt_only` (the late phase's)
    return to_conditioning(staged.first), to_conditioning(staged.late), chart_to_image(staged.first)


class SqueezeDLAEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        image_inputs = [
            io.Image.Input(f"image_{i}", optional=True,
                           tooltip=f"Reference image(s) of the subject (slot {i}); every image of a batch is one reference.")
            for i in range(1, MAX_IMAGE_INPUTS + 1)
        ]
        return io.Schema(
            node_id="SqueezeDLAEncode",
            display_name="Squeeze DLA Encode",
            category="Squeeze",
            description="InternVL3 reads the prompt and the references together; "
                        "the Dual Layer Aggregator turns all its layers into FLUX conditioning.",
            inputs=[
                SqueezeMLLMType.Input("mllm", tooltip="From Squeeze MLLM Loader."),
                io.Combo.Input("dla_name", options=dla_choices(),
                               tooltip="DLA weights (.safetensors) from models/squeeze/, trained for this MLLM; "
                                       f"'{EMBEDDED_DLA}' is the one for Squeeze Mini Models' InternVL3."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="What the subject should do. May be empty (conditioning from the references only)."),
                *image_inputs,
                io.Combo.Input("aspect_mode", options=list(ASPECT_MODES), default="pad",
                               tooltip="How a non-square reference fits the MLLM's square tile: "
                                       "pad (letterbox, default), crop (centre), stretch."),
                io.Int.Input("max_references", default=4, min=1, max=16,
                             tooltip="Limit on references; each costs 256 MLLM tokens with InternVL3."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="conditioning",
                                       tooltip="MLLM(prompt + references): denoising phases 1 and 2 (add reference latents for phase 2)."),
                io.Conditioning.Output(display_name="prompt_only", tooltip="MLLM(prompt only): denoising phase 3 (add reference latents)."),
                io.Image.Output(display_name="layer_weights", tooltip="Mean DLA weight per MLLM layer for text and image tokens."),
            ],
        )

    @classmethod
    def validate_inputs(cls, dla_name):
        path = dla_path(dla_name)
        if path is None:
            return missing_dla_message(dla_name)
        try:  # the file's header and metadata, before the queue runs anything (no tensor is read)
            if dla_name == EMBEDDED_DLA:
                embedded = EmbeddedModels.packaged()
                embedded.verify((embedded.dla.relative_to(embedded.root).as_posix(),))
            safetensors_file(path, f"dla_name '{dla_name}':", "DLA weights")
            read_dla_metadata(path)
        except SqueezeError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, mllm, dla_name, prompt, aspect_mode, max_references,
                image_1=None, image_2=None, image_3=None, image_4=None) -> io.NodeOutput:
        path = dla_path(dla_name)
        if path is None:
            raise FileNotFoundError(missing_dla_message(dla_name))
        return io.NodeOutput(*encode(mllm, path, prompt, [image_1, image_2, image_3, image_4], aspect_mode, max_references))
