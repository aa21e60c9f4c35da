"""The embedded miniature's template on a real ComfyUI server: it runs as shipped (no model file of the server's is
used), draws what `squeeze generate` draws with no arguments (the final latents to 1e-4, on the trained weights),
and bad input to its nodes is a node error that names the input."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from comfy_server import PromptRejected
from PIL import Image
from safetensors.torch import load_file
from test_server import node_of, outputs_of, run

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
MINI = "Squeeze mini, subject from one reference"


def mini_template() -> dict:
    return json.loads((WORKFLOWS / "api" / f"{MINI}.json").read_text())


def staged_sampler_id(workflow: dict) -> str:
    """The sampler given all three denoising phases' conditionings (the template's others are MLLM only and VAE only)."""
    return next(k for k, n in workflow.items() if n["class_type"] == "SqueezeStagedSampler" and "positive_middle" in n["inputs"])


def squeeze_generate_latents(**overrides) -> torch.Tensor:
    """What `squeeze generate` computes with no arguments (and these GenerateConfig fields): its final latents."""
    from squeeze_core.cli import build_parser
    from squeeze_core.cli.models import check_model_options, load_pipeline, prompt_and_reference, sampling_config

    args = build_parser().parse_args(["generate"])
    config = sampling_config(args, prompt="", seed=args.seed)
    opened = check_model_options(args)
    pipe = load_pipeline(args, "cpu")
    prompt, references = prompt_and_reference(args, opened)
    latents, _ = pipe(dataclasses.replace(config, prompt=prompt, **overrides), references, progress=False)
    return latents


def test_the_template_holds_squeeze_generates_settings():
    """Identity 0's reference and first prompt, seed 0, 12 steps, cfg 2.5, taus 0.8 / 0.2, 64 px: the defaults."""
    from squeeze_core.cli.models import EMBEDDED_SAMPLING
    from squeeze_core.embedded import EmbeddedModels
    from squeeze_core.pipeline import GenerateConfig

    workflow = mini_template()
    defaults = GenerateConfig(prompt="", **EMBEDDED_SAMPLING)
    sampler = workflow[staged_sampler_id(workflow)]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["tau1"], sampler["tau2"]) == (
        0, defaults.steps, defaults.cfg, defaults.tau1, defaults.tau2)
    assert node_of(workflow, "EmptySD3LatentImage")["inputs"]["width"] == defaults.width == 64
    reference = node_of(workflow, "SqueezeMiniReference")["inputs"]
    assert (reference["identity"], reference["reference"]) == (0, 0)
    prompts = [n["inputs"]["prompt"] for n in workflow.values() if n["class_type"] == "SqueezeDLAEncode"]
    assert sorted(prompts) == ["", EmbeddedModels.packaged().subject(0).prompt(0)]


def test_the_template_runs_and_matches_squeeze_generate(comfyui_server):
    workflow = mini_template()
    workflow["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [staged_sampler_id(workflow), 0],
                                                            "filename_prefix": "latents/squeeze_mini"}}
    entry = run(comfyui_server, workflow)
    sizes = sorted(Image.open(f).size for f in outputs_of(comfyui_server, entry))
    assert sizes == [(64, 64), (1024, 256 + 14)]  # the subject image, and the labelled four-column sheet
    saved = sorted((comfyui_server.base_dir / "output" / "latents").glob("squeeze_mini*.latent"))[-1]
    comfy_latents = load_file(str(saved))["latent_tensor"]
    expected = squeeze_generate_latents()
    assert comfy_latents.shape == expected.shape == (1, 16, 8, 8)
    torch.testing.assert_close(comfy_latents, expected, atol=1e-4, rtol=0)
    # a different seed gives other latents: the comparison above could fail
    assert (squeeze_generate_latents(seed=1) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("node, inputs, message", [
    ("SqueezeMiniReference", {"identity": 30}, r"identity=30 is out of range.*identities 0 to 29"),
    ("SqueezeMiniReference", {"reference": 3}, r"reference=3 is out of range"),
    ("SqueezeMiniReference", {"prompt_index": -1}, r"prompt_index=-1 is out of range"),
    ("SqueezeDLAEncode", {"dla_name": "squeeze mini DLA"}, r"DLA weights 'squeeze mini DLA' not found"),
])
def test_bad_input_to_the_mini_nodes_is_a_node_error(comfyui_server, node, inputs, message):
    workflow = copy.deepcopy(mini_template())
    for spec in workflow.values():
        if spec["class_type"] == node:
            spec["inputs"].update(inputs)
    with pytest.raises(PromptRejected, match=message) as rejected:
        comfyui_server.queue(workflow)
    assert {error["class_type"] for error in rejected.value.answer["node_errors"].values()} == {node}
    assert "SqueezeMiniModels" in comfyui_server.get("/object_info")  # still serving
