"""The pack in a real ComfyUI server on the CPU: registration, the shipped workflows, and bad input."""

import copy
import json
import re
from pathlib import Path

import pytest
from comfy_server import PromptRejected, execution_error
from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"
SQUEEZE_NODES = {"SqueezeMLLMLoader", "SqueezeDLAEncode", "SqueezeReferenceLatents", "SqueezeStagedSampler", "SqueezeStagedGuider", "SqueezeCosineScheduler"}


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


def test_subject_workflow_writes_images_and_switches_stages(comfyui_server):
    workflow = for_cpu(load("squeeze_subject"), steps=6, tau2=0.5)
    log_start = len(comfyui_server.log_path.read_text(errors="replace"))
    entry = run(comfyui_server, workflow)
    files = outputs_of(comfyui_server, entry)
    sizes = sorted(Image.open(f).size for f in files)
    assert sizes == [(64, 64), (960, 420)]  # the image, and the DLA layer-weight chart
    log = comfyui_server.log_path.read_text(errors="replace")[log_start:]
    stages = [int(s) for s in re.findall(r"stage (\d) from sigma", log)]
    assert stages == [1, 2, 3], log[-3000:]
    assert "lora key not loaded" not in log  # the Squeeze LoRA maps onto every targeted FLUX weight


def test_multi_reference_workflow_runs(comfyui_server):
    workflow = for_cpu(load("squeeze_multi_reference"), steps=3)
    encode = [n for n in workflow.values() if n["class_type"] == "SqueezeDLAEncode" and n["inputs"]["prompt"]][0]
    assert {"image_1", "image_2", "image_3"} <= set(encode["inputs"])
    entry = run(comfyui_server, workflow)
    assert (64, 64) in [Image.open(f).size for f in outputs_of(comfyui_server, entry)]


def test_flux_text_to_image_graph_validates_apart_from_the_text_encoder_files(comfyui_server):
    """T5-XXL has no small form ComfyUI can load, so this graph cannot run here: the server must reject it only for
    the missing text-encoder files, which proves every other node, link and value of the graph is valid."""
    with pytest.raises(PromptRejected) as rejected:
        comfyui_server.queue(for_cpu(load("flux_t2i_staged_sampler")))
    errors = rejected.value.answer["node_errors"]
    failing = {comfyui_server_class(load("flux_t2i_staged_sampler"), node_id) for node_id in errors}
    assert failing == {"DualCLIPLoader"}, errors


def comfyui_server_class(workflow, node_id):
    return workflow[node_id]["class_type"]


def test_bad_input_is_a_node_error_and_the_server_keeps_serving(comfyui_server):
    base = for_cpu(load("squeeze_subject"), steps=2)

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
