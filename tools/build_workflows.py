"""Write the shipped workflows: each graph is described once below and written as UI-format JSON (opens in the
ComfyUI canvas, and is one of the pack's templates) and as its API-format twin (what tests and scripts queue).

    python tools/build_workflows.py --object-info http://127.0.0.1:8188/object_info   # a running ComfyUI with Squeeze
    python tools/build_workflows.py --object-info object_info.json                    # or a saved copy

The node definitions (input order, widget vs socket, output names and types) come from that /object_info, so the UI
files match what the server expects. tests/e2e/test_workflows_sync.py checks every pair stays in sync.

A file's name is its title in ComfyUI's template browser, and its description too: for a custom node pack the
frontend reads nothing else (it shows `<name>.jpg` beside the file as the thumbnail: tools/render_workflows.py).
So each name says what the workflow does, in words an artist reads, and without "-" or "_", which the browser turns
into spaces in the description.

Each UI file opens framed: its saved view (`extra.ds`) fits every node into a 1280 x 800 browser window, clear of the
frontend's menus, at a zoom where LiteGraph still draws node text (tests/e2e/test_templates.py checks both).
"""

from __future__ import annotations

import argparse
import json
import math
import urllib.request
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
PROMPT = "a photo of the toy riding a skateboard down a sunny street"
KONTEXT_PROMPT = "the toy rides a skateboard down a sunny street, keep its shape, colours and markings"  # an instruction

# The template names (= titles), one per shipped workflow
SUBJECT = "Squeeze subject from one reference"
MULTI_REFERENCE = "Squeeze subject from three references"
TEXT_TO_IMAGE = "FLUX.1 dev text to image, staged sampler"
KONTEXT = "FLUX.1 Kontext dev, reference joins late"
MINI = "Squeeze mini, subject from one reference"  # the embedded miniature: runs as shipped, on a CPU, no files
MINI_PROMPT = "a small vase in the snow, on the left, next to a ball"  # held-out identity 0's first benchmark prompt
EMBEDDED_DLA = "squeeze mini DLA (embedded)"  # nodes/dla_encode.py

# Layout, in canvas units: columns of fixed-width nodes; each node's height from what it shows
NODE_WIDTH, COLUMN_GAP, ROW_GAP, MARGIN = 300, 36, 24, 40
TITLE_HEIGHT = 30  # LiteGraph draws the title bar above pos; size excludes it
# The view a workflow opens in: a 1280 x 800 window minus what ComfyUI's frontend (1.35, measured in Chromium) lays
# over the canvas there: the side bar on the left (58 px), the tab bar and the floating Run toolbar at the top (to
# 88 px), and the minimap with the zoom controls in the bottom right corner (from x 1025, y 545)
VIEW_WIDTH, VIEW_HEIGHT = 1280, 800
VIEW_LEFT, VIEW_TOP, VIEW_RIGHT, VIEW_BOTTOM = 64, 96, 1264, 784
MINIMAP_LEFT, MINIMAP_TOP = 1020, 540
MIN_SCALE = 0.6  # below 8 / 14 = 0.57 LiteGraph stops drawing node text (14 px text, 8 px level-of-detail threshold)


def is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


class Graph:
    def __init__(self, info: dict):
        self.info = info
        self.nodes: list[dict] = []

    def add(self, class_type: str, title: str | None = None, column: int = 0, **inputs):
        if class_type not in self.info:
            raise KeyError(f"{class_type} is not in /object_info")
        spec = self.info[class_type]["input"]
        for name, declared in {**spec.get("required", {}), **spec.get("optional", {})}.items():
            if name not in inputs and is_widget(declared):  # every widget gets a value, the same in both files
                options = declared[1] if len(declared) > 1 else {}
                choices = declared[0] if isinstance(declared[0], list) else options.get("options", [])
                inputs[name] = options["default"] if "default" in options else choices[0]
        node = {"id": len(self.nodes) + 1, "type": class_type, "inputs": inputs, "title": title, "column": column}
        self.nodes.append(node)
        return [(node["id"], slot) for slot in range(len(self.info[class_type]["output"]))]

    def api(self) -> dict:
        out = {}
        for node in self.nodes:
            inputs = {k: [str(v[0]), v[1]] if isinstance(v, tuple) else v for k, v in node["inputs"].items()}
            title = node["title"] or self.info[node["type"]]["display_name"] or node["type"]
            out[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": title}}
        return out

    def ui(self) -> dict:
        links, ui_nodes, rows = [], [], {}
        for node in self.nodes:  # links first: outputs need to know their link ids
            for name, value in node["inputs"].items():
                if isinstance(value, tuple):
                    source = self.nodes[value[0] - 1]
                    kind = self.info[source["type"]]["output"][value[1]]
                    links.append([len(links) + 1, value[0], value[1], node["id"], name, kind])
        for order, node in enumerate(self.nodes):
            spec = self.info[node["type"]]
            declared = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
            names = spec["input_order"].get("required", []) + spec["input_order"].get("optional", [])
            inputs, widgets = [], []
            for name in names:
                value = node["inputs"].get(name)
                link = next((lk for lk in links if lk[3] == node["id"] and lk[4] == name), None)
                options = declared[name][1] if len(declared[name]) > 1 else {}
                if is_widget(declared[name]):
                    if link is not None:
                        raise ValueError(f"{node['type']}.{name}: converted widgets are not used in shipped workflows")
                    widgets.append(value)
                    if options.get("control_after_generate"):
                        widgets.append("fixed")
                    if options.get("image_upload"):
                        widgets.append("image")  # the frontend's upload button keeps a value too
                else:
                    inputs.append({"name": name, "type": declared[name][0], "link": link[0] if link else None})
            outputs = [
                {"name": out_name, "type": kind, "slot_index": slot,
                 "links": [lk[0] for lk in links if lk[1] == node["id"] and lk[2] == slot]}
                for slot, (out_name, kind) in enumerate(zip(spec["output_name"], spec["output"]))
            ]
            # height as the frontend lays a node out (20 px a slot row, 24 a widget), a prompt box of 110 px, and room
            # for the 220 px image preview that a LoadImage shows at once and a SaveImage after a run
            multiline = sum(1 for n in names if len(declared[n]) > 1 and declared[n][1].get("multiline"))
            height = 20 * max(len(inputs), len(outputs)) + 6 + (8 + 24 * len(widgets) + 86 * multiline if widgets else 0)
            height += 224 if node["type"] in ("LoadImage", "SaveImage") else 0
            top = rows.get(node["column"], MARGIN + TITLE_HEIGHT)
            rows[node["column"]] = top + height + TITLE_HEIGHT + ROW_GAP
            left = MARGIN + (NODE_WIDTH + COLUMN_GAP) * node["column"]
            ui_node = {
                "id": node["id"], "type": node["type"], "pos": [left, top], "size": [NODE_WIDTH, height],
                "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": node["type"]}, "widgets_values": widgets,
            }
            if node["title"]:
                ui_node["title"] = node["title"]
            ui_nodes.append(ui_node)
        ui_links = []
        for link_id, src, src_slot, dst, name, kind in links:
            dst_node = next(n for n in ui_nodes if n["id"] == dst)
            dst_slot = next(i for i, inp in enumerate(dst_node["inputs"]) if inp["name"] == name)
            ui_links.append([link_id, src, src_slot, dst, dst_slot, kind])
        return {
            "last_node_id": len(self.nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": ui_links,
            "groups": [], "config": {}, "extra": {"ds": framed_view(ui_nodes)}, "version": 0.4,
        }


def framed_view(ui_nodes: list[dict]) -> dict:
    """The saved view (LiteGraph's DragAndScale: screen = (canvas + offset) * scale) that shows every node, title bars
    included, in the free part of a 1280 x 800 window: as large as fits (at most 1:1), centred across, from the top.
    The layouts keep the columns that reach the minimap's corner short; tests/e2e/test_templates.py checks all of it."""
    left = min(n["pos"][0] for n in ui_nodes)
    top = min(n["pos"][1] - TITLE_HEIGHT for n in ui_nodes)
    right = max(n["pos"][0] + n["size"][0] for n in ui_nodes)
    bottom = max(n["pos"][1] + n["size"][1] for n in ui_nodes)
    free_width, free_height = VIEW_RIGHT - VIEW_LEFT, VIEW_BOTTOM - VIEW_TOP
    scale = math.floor(min(free_width / (right - left), free_height / (bottom - top), 1.0) * 1000) / 1000
    if scale < MIN_SCALE:
        raise ValueError(f"the graph ({right - left} x {bottom - top}) fits the view only at zoom {scale}: lay it out smaller")
    offset_x = (VIEW_LEFT + (free_width - scale * (right - left)) / 2) / scale - left
    offset_y = VIEW_TOP / scale - top
    return {"scale": scale, "offset": [round(offset_x, 2), round(offset_y, 2)]}


def flux_model(g: Graph, lora: bool = True, unet_name: str = "flux1-dev.safetensors", shift: bool = True):
    model = g.add("UNETLoader", column=0, unet_name=unet_name, weight_dtype="default")[0]
    if lora:
        model = g.add("LoraLoaderModelOnly", "Squeeze FLUX LoRA", column=0, model=model,
                      lora_name="squeeze_flux_lora.safetensors", strength_model=1.0)[0]
    if shift:
        model = g.add("ModelSamplingFlux", column=0, model=model, max_shift=1.15, base_shift=0.5, width=1024, height=1024)[0]
    vae = g.add("VAELoader", column=0, vae_name="ae.safetensors")[0]
    return model, vae


def squeeze_subject(info: dict, reference_files: list[str]) -> Graph:
    """The full method: MLLM + DLA conditioning, reference latents, staged sampling."""
    g = Graph(info)
    model, vae = flux_model(g)
    mllm = g.add("SqueezeMLLMLoader", column=0, mllm_name="InternVL3-8B-hf", dtype="auto", offload_after_encode=False,
                 keep_host_copy=True)[0]
    images = {f"image_{i + 1}": g.add("LoadImage", f"Reference {i + 1}", column=1, image=name)[0] for i, name in enumerate(reference_files)}
    encode = g.add("SqueezeDLAEncode", "Prompt + references", column=2, mllm=mllm, dla_name="squeeze_dla.safetensors",
                   prompt=PROMPT, aspect_mode="pad", max_references=4, **images)
    negative = g.add("SqueezeDLAEncode", "Negative (empty prompt)", column=2, mllm=mllm, dla_name="squeeze_dla.safetensors",
                     prompt="", aspect_mode="pad", max_references=4)
    middle = g.add("SqueezeReferenceLatents", "Stage 2: + reference latents", column=3,
                   conditioning=encode[0], vae=vae, long_side=512, **images)
    late = g.add("SqueezeReferenceLatents", "Stage 3: prompt only + ref. latents", column=3,
                 conditioning=encode[1], vae=vae, long_side=512, **images)
    latent = g.add("EmptySD3LatentImage", column=3, width=1024, height=1024, batch_size=1)
    samples = g.add("SqueezeStagedSampler", column=4, model=model, seed=42, steps=28, cfg=2.5, sampler_name="euler",
                    scheduler="squeeze_cosine", positive=encode[0], negative=negative[1], latent_image=latent[0], denoise=1.0,
                    positive_middle=middle[0], positive_late=late[0], tau1=0.8, tau2=0.2)
    image = g.add("VAEDecode", column=4, samples=samples[0], vae=vae)
    g.add("SaveImage", column=5, images=image[0], filename_prefix="squeeze")
    g.add("SaveImage", "DLA layer weights", column=5, images=encode[2], filename_prefix="squeeze_layer_weights")
    return g


def flux_text_to_image(info: dict) -> Graph:
    """A plain FLUX.1-dev text-to-image graph with the staged sampler where KSampler was (staged inputs empty)."""
    g = Graph(info)
    model, vae = flux_model(g, lora=False)
    clip = g.add("DualCLIPLoader", column=1, clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors", type="flux")[0]
    text = g.add("CLIPTextEncode", column=1, clip=clip, text="a red fox reading a newspaper in a cafe, film photo")
    positive = g.add("FluxGuidance", column=2, conditioning=text[0], guidance=3.5)
    negative = g.add("ConditioningZeroOut", column=2, conditioning=text[0])
    latent = g.add("EmptySD3LatentImage", column=2, width=1024, height=1024, batch_size=1)
    samples = g.add("SqueezeStagedSampler", column=3, model=model, seed=42, steps=20, cfg=1.0,
                    sampler_name="euler", scheduler="simple", positive=positive[0], negative=negative[0], latent_image=latent[0],
                    denoise=1.0, tau1=0.8, tau2=0.2)
    image = g.add("VAEDecode", column=4, samples=samples[0], vae=vae)
    g.add("SaveImage", column=4, images=image[0], filename_prefix="flux")
    return g


def flux_kontext(info: dict) -> Graph:
    """FLUX.1 Kontext dev with the staged sampler: the text alone conditions stage 1 (t > tau1), so the layout comes
    from the prompt; the reference image's latent joins from tau1 on (ReferenceLatent into positive_middle and
    positive_late). The paper's remedy for copy-paste, applied to Kontext with stock nodes only; otherwise the stock
    Kontext graph: the reference scaled to a Kontext size, its latent also the canvas, guidance 2.5, cfg 1."""
    g = Graph(info)
    model, vae = flux_model(g, lora=False, unet_name="flux1-kontext-dev.safetensors", shift=False)
    clip = g.add("DualCLIPLoader", column=0, clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors", type="flux")[0]
    image = g.add("LoadImage", "Reference", column=1, image="subject.png")[0]
    scaled = g.add("FluxKontextImageScale", column=1, image=image)[0]
    latent = g.add("VAEEncode", column=1, pixels=scaled, vae=vae)[0]
    text = g.add("CLIPTextEncode", column=2, clip=clip, text=KONTEXT_PROMPT)[0]
    text_only = g.add("FluxGuidance", "Stage 1: prompt only", column=2, conditioning=text, guidance=2.5)[0]
    negative = g.add("ConditioningZeroOut", column=2, conditioning=text)[0]
    with_reference = g.add("ReferenceLatent", "Stages 2 and 3: + reference latent", column=3, conditioning=text_only, latent=latent)[0]
    samples = g.add("SqueezeStagedSampler", column=3, model=model, seed=42, steps=20, cfg=1.0, sampler_name="euler",
                    scheduler="simple", positive=text_only, negative=negative, latent_image=latent, denoise=1.0,
                    positive_middle=with_reference, positive_late=with_reference, tau1=0.8, tau2=0.2)[0]
    decoded = g.add("VAEDecode", column=4, samples=samples, vae=vae)[0]
    g.add("SaveImage", column=4, images=decoded, filename_prefix="kontext_staged")
    return g


def squeeze_mini(info: dict) -> Graph:
    """The full method on the embedded miniature, as `squeeze generate` runs it with no arguments (held-out identity 0,
    its first benchmark prompt, seed 0, 12 steps, 64 px), beside the MLLM-only and VAE-only samples of the same seed
    and a comparison sheet. Every model and the reference ship inside the pack: it runs as shipped."""
    g = Graph(info)
    model, vae, mllm = g.add("SqueezeMiniModels", column=0, lora_strength=1.0)
    image = g.add("SqueezeMiniReference", "Reference (held-out subject)", column=0, identity=0, reference=0, prompt_index=0)[0]
    model = g.add("ModelSamplingFlux", column=0, model=model, max_shift=1.15, base_shift=0.5, width=64, height=64)[0]
    latent = g.add("EmptySD3LatentImage", column=0, width=64, height=64, batch_size=1)[0]
    encode = g.add("SqueezeDLAEncode", "Prompt + reference", column=1, mllm=mllm, dla_name=EMBEDDED_DLA,
                   prompt=MINI_PROMPT, aspect_mode="pad", max_references=4, image_1=image)
    negative = g.add("SqueezeDLAEncode", "Negative (empty prompt)", column=1, mllm=mllm, dla_name=EMBEDDED_DLA,
                     prompt="", aspect_mode="pad", max_references=4)[1]
    middle = g.add("SqueezeReferenceLatents", "Stage 2: + reference latents", column=2,
                   conditioning=encode[0], vae=vae, long_side=64, image_1=image)[0]
    late = g.add("SqueezeReferenceLatents", "Stage 3: prompt only + ref. latents", column=2,
                 conditioning=encode[1], vae=vae, long_side=64, image_1=image)[0]
    sampler = dict(model=model, seed=0, steps=12, cfg=2.5, sampler_name="euler", scheduler="squeeze_cosine",
                   negative=negative, latent_image=latent, denoise=1.0, tau1=0.8, tau2=0.2)
    vae_only = g.add("SqueezeStagedSampler", column=2, positive=late, **sampler)[0]
    staged = g.add("SqueezeStagedSampler", column=3, positive=encode[0], positive_middle=middle, positive_late=late, **sampler)[0]
    mllm_only = g.add("SqueezeStagedSampler", column=3, positive=encode[0], **sampler)[0]
    staged = g.add("VAEDecode", "Staged", column=4, samples=staged, vae=vae)[0]
    mllm_only = g.add("VAEDecode", "MLLM only", column=4, samples=mllm_only, vae=vae)[0]
    vae_only = g.add("VAEDecode", "VAE only", column=4, samples=vae_only, vae=vae)[0]
    sheet = g.add("SqueezeComparisonSheet", column=4, reference=image, mllm_only=mllm_only, vae_only=vae_only, staged=staged,
                  tile=256)[0]
    g.add("SaveImage", column=5, images=staged, filename_prefix="squeeze_mini")
    g.add("SaveImage", "Comparison sheet", column=5, images=sheet, filename_prefix="squeeze_mini_sheet")
    return g


def build_all(info: dict) -> dict[str, Graph]:
    return {
        MINI: squeeze_mini(info),
        SUBJECT: squeeze_subject(info, ["subject.png"]),
        MULTI_REFERENCE: squeeze_subject(info, ["subject.png", "subject_side.png", "subject_back.png"]),
        TEXT_TO_IMAGE: flux_text_to_image(info),
        KONTEXT: flux_kontext(info),
    }


def load_object_info(source: str) -> dict:
    if source.startswith("http"):
        with urllib.request.urlopen(source, timeout=60) as response:
            return json.load(response)
    return json.loads(Path(source).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object-info", required=True, help="URL of a running ComfyUI's /object_info, or a saved JSON file")
    args = parser.parse_args()
    info = load_object_info(args.object_info)
    graphs = build_all(info)
    WORKFLOWS.mkdir(exist_ok=True)
    for stale in [*WORKFLOWS.glob("*.json"), *WORKFLOWS.glob("api/*.json")]:
        if stale.stem not in graphs:  # a renamed workflow (its thumbnail goes with tools/render_workflows.py)
            stale.unlink()
    for name, graph in graphs.items():
        (WORKFLOWS / f"{name}.json").write_text(json.dumps(graph.ui(), indent=1) + "\n")
        (WORKFLOWS / "api" / f"{name}.json").parent.mkdir(exist_ok=True)
        (WORKFLOWS / "api" / f"{name}.json").write_text(json.dumps(graph.api(), indent=1) + "\n")


if __name__ == "__main__":
    main()
