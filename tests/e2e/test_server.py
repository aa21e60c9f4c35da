"""The pack in a real ComfyUI server on the CPU: registration, the shipped workflows, and bad input."""

import copy
import json
import re
from pathlib import Path

import pytest
from comfy_server import PromptRejected, execution_error
from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"
SQUEEZE_NODES = {
    "SqueezeMLLMLoader", "SqueezeDLAEncode", "SqueezeReferenceLatents",
    "SqueezeStagedSampler", "SqueezeStagedGuider", "SqueezeCosineScheduler",
    "SqueezeMiniModels", "SqueezeMiniReference", "SqueezeComparisonSheet",
}
# the shipped workflows (their file names are their titles in ComfyUI's template browser)
SUBJECT = "Squeeze subject from one reference"
MULTI_REFERENCE = "Squeeze subject from three references"
TEXT_TO_IMAGE = "FLUX.1 dev text to image, staged sampler"
KONTEXT = "FLUX.1 Kontext dev, reference joins late"


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def for_cpu(workflow: dict, steps: int = 6, tau2: float | None = None) -> dict:
    """The shipped workflow at a CPU-friendly size: 64 px output and references, fewer steps. Nothing else changes."""
    workflow = copy.deepcopy(workflow)
    for node in workflow.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EmptySD3LatentImage", "ModelSamplingFlux"):
            inputs["width"] = inputs["height"] = 64
        if node["class_type"] == "SqueezeReferenceLatents":
            inputs["long_side"] = 64
        if node["class_type"] == "SqueezeStagedSampler":
            inputs["steps"] = steps
            if tau2 is not None:
                inputs["tau2"] = tau2
    return workflow


def with_inputs(workflow: dict, class_type: str, **inputs) -> dict:
    """A copy of the workflow with these inputs set on every node of that class."""
    workflow = copy.deepcopy(workflow)
    for node in workflow.values():
        if node["class_type"] == class_type:
            node["inputs"].update(inputs)
    return workflow


def node_of(workflow: dict, class_type: str) -> dict:
    return next(node for node in workflow.values() if node["class_type"] == class_type)


def outputs_of(server, entry: dict) -> list[Path]:
    files = []
    for output in entry["outputs"].values():
        for image in output.get("images", []):
            folder = server.base_dir / ("output" if image["type"] == "output" else image["type"])
            files.append(folder / image.get("subfolder", "") / image["filename"])
    return files


def test_every_node_is_registered_with_tooltips(comfyui_server):
    info = comfyui_server.object_info
    assert SQUEEZE_NODES <= set(info)
    for node_id in SQUEEZE_NODES:
        assert info[node_id]["category"] == "Squeeze"
        declared = {**info[node_id]["input"]["required"], **info[node_id]["input"].get("optional", {})}
        untipped = [name for name, spec in declared.items() if not (len(spec) > 1 and spec[1].get("tooltip"))]
        assert untipped == [], f"{node_id} inputs without a tooltip: {untipped}"
    assert "squeeze_cosine" in info["SqueezeStagedSampler"]["input"]["required"]["scheduler"][1]["options"]
    assert "InternVL3-8B-hf" in info["SqueezeMLLMLoader"]["input"]["required"]["mllm_name"][1]["options"]


def run(server, workflow: dict) -> dict:
    entry = server.wait(server.queue(workflow))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    return entry


def test_subject_workflow_writes_images_and_switches_phases(comfyui_server):
    workflow = for_cpu(load(SUBJECT), steps=6, tau2=0.5)
    log_start = len(comfyui_server.log_path.read_text(errors="replace"))
    entry = run(comfyui_server, workflow)
    files = outputs_of(comfyui_server, entry)
    sizes = sorted(Image.open(f).size for f in files)
    assert sizes == [(64, 64), (960, 420)]  # the image, and the DLA layer-weight chart
    log = comfyui_server.log_path.read_text(errors="replace")[log_start:]
    phases = [int(s) for s in re.findall(r"denoising phase (\d) from sigma", log)]
    assert phases == [1, 2, 3], log[-3000:]
    assert "lora key not loaded" not in log  # the Squeeze LoRA maps onto every targeted FLUX weight


def test_multi_reference_workflow_runs(comfyui_server):
    workflow = for_cpu(load(MULTI_REFERENCE), steps=3)
    encode = [n for n in workflow.values() if n["class_type"] == "SqueezeDLAEncode" and n["inputs"]["prompt"]][0]
    assert {"image_1", "image_2", "image_3"} <= set(encode["inputs"])
    entry = run(comfyui_server, workflow)
    assert (64, 64) in [Image.open(f).size for f in outputs_of(comfyui_server, entry)]


@pytest.mark.parametrize("name", [TEXT_TO_IMAGE, KONTEXT])
def test_t5_graphs_validate_apart_from_the_text_encoder_files(comfyui_server, name):
    """T5-XXL has no small form ComfyUI can load, so these graphs cannot run here as they are: the server must reject
    them only for the missing text-encoder files, which proves every other node, link and value is valid."""
    workflow = for_cpu(load(name))
    with pytest.raises(PromptRejected) as rejected:
        comfyui_server.queue(workflow)
    errors = rejected.value.answer["node_errors"]
    assert {workflow[node_id]["class_type"] for node_id in errors} == {"DualCLIPLoader"}, errors


def kontext_without_t5(workflow: dict) -> dict:
    """The Kontext graph with the two nodes this machine cannot run swapped for ones it can, and nothing else changed:
    the text encoder (T5-XXL: no small form) gives way to a Squeeze DLA encode of the same prompt, whose conditioning
    has FLUX's text shapes (4096-wide context, 768-wide pooled); the rescale to a Kontext size (about 1 MP) gives way
    to a 64 px one."""
    workflow = copy.deepcopy(workflow)
    clip_id = next(i for i, node in workflow.items() if node["class_type"] == "DualCLIPLoader")
    text_id = next(i for i, node in workflow.items() if node["class_type"] == "CLIPTextEncode")
    scale_id = next(i for i, node in workflow.items() if node["class_type"] == "FluxKontextImageScale")
    del workflow[clip_id]
    workflow["mllm"] = {
        "class_type": "SqueezeMLLMLoader", "inputs": {"mllm_name": "InternVL3-8B-hf", "dtype": "auto", "offload_after_encode": True},
    }
    workflow[text_id] = {"class_type": "SqueezeDLAEncode", "inputs": {  # output 0 is the conditioning, as CLIPTextEncode's
        "mllm": ["mllm", 0], "dla_name": "squeeze_dla.safetensors", "prompt": workflow[text_id]["inputs"]["text"],
        "aspect_mode": "pad", "max_references": 4,
    }}
    workflow[scale_id] = {"class_type": "ImageScale", "inputs": {
        "image": workflow[scale_id]["inputs"]["image"], "upscale_method": "bilinear", "width": 64, "height": 64, "crop": "center"}}
    return workflow


def test_kontext_workflow_adds_the_reference_latent_from_stage_2(comfyui_server):
    """The reference latent is in positive_middle and positive_late only; stage 1 samples on the text alone."""
    workflow = load(KONTEXT)
    sampler = node_of(workflow, "SqueezeStagedSampler")["inputs"]
    reference = workflow[sampler["positive_middle"][0]]
    assert reference["class_type"] == "ReferenceLatent" and sampler["positive_late"] == sampler["positive_middle"]
    assert reference["inputs"]["conditioning"] == sampler["positive"]  # the same text conditioning, + the reference
    assert workflow[sampler["positive"][0]]["class_type"] == "FluxGuidance"
    assert workflow[reference["inputs"]["latent"][0]]["class_type"] == "VAEEncode"

    log_start = len(comfyui_server.log_path.read_text(errors="replace"))
    entry = run(comfyui_server, kontext_without_t5(for_cpu(workflow, steps=6, tau2=0.5)))  # 6 steps reach t = 0.39
    assert [Image.open(f).size for f in outputs_of(comfyui_server, entry)] == [(64, 64)]
    log = comfyui_server.log_path.read_text(errors="replace")[log_start:]
    assert [int(s) for s in re.findall(r"denoising phase (\d) from sigma", log)] == [1, 2, 3], log[-3000:]


def test_bad_input_is_a_node_error_and_the_server_keeps_serving(comfyui_server):
    base = for_cpu(load(SUBJECT), steps=2)

    bad = copy.deepcopy(base)
    node_of(bad, "SqueezeStagedSampler")["inputs"].update(tau1=0.2, tau2=0.6)
    with pytest.raises(PromptRejected, match="tau1=0.2 must be greater than tau2=0.6"):
        comfyui_server.queue(bad)

    bad = copy.deepcopy(base)
    node_of(bad, "SqueezeMLLMLoader")["inputs"]["mllm_name"] = "InternVL3-38B-hf"
    with pytest.raises(PromptRejected, match=r"MLLM 'InternVL3-38B-hf' not found.*models/mllm/"):
        comfyui_server.queue(bad)

    bad = with_inputs(base, "SqueezeDLAEncode", dla_name="squeeze_dla_v2.safetensors")
    with pytest.raises(PromptRejected, match=r"DLA weights 'squeeze_dla_v2.safetensors' not found.*models/squeeze/"):
        comfyui_server.queue(bad)

    bad = with_inputs(base, "SqueezeDLAEncode", dla_name="squeeze_dla_1b.safetensors")
    error = execution_error(comfyui_server.wait(comfyui_server.queue(bad)))
    assert error["node_type"] == "SqueezeDLAEncode"
    assert "made for an MLLM with internvl, 4 layers x 48" in error["exception_message"]
    assert "InternVL3-8B-hf (internvl, 6 layers x 64, qwen2" in error["exception_message"]

    bad = copy.deepcopy(base)
    del node_of(bad, "SqueezeStagedSampler")["inputs"]["positive_late"]
    error = execution_error(comfyui_server.wait(comfyui_server.queue(bad)))
    assert error["node_type"] == "SqueezeStagedSampler" and "positive_late is not connected" in error["exception_message"]

    run(comfyui_server, base)  # and the next good prompt still runs
