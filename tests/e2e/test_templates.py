"""The shipped workflows as an artist first meets them: ComfyUI's template browser, and the canvas they open in.

How ComfyUI reads a custom node pack's templates (server: app/custom_node_manager.py, the same in 0.3.75 and 0.8.0;
frontend 1.32 to 1.58: workflowTemplatesStore / useTemplateWorkflows): `/workflow_templates` lists the `*.json` file
names in the pack's `workflows/` folder (one level: `workflows/api/` is not listed), and the frontend makes each
name the template's title and, with "-" and "_" turned into spaces, its description; the thumbnail is `<name>.jpg`
beside the file, shown square. Nothing inside the workflow is read for the browser.
"""

import json
import urllib.parse
import urllib.request
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
PACK = "squeeze"  # the pack's folder name in custom_nodes (tests/comfy_server.py links it so); the browser's group

# The canvas a workflow opens in: a 1280 x 800 browser window, less what ComfyUI's frontend (1.35, measured in
# headless Chromium) lays over it: the side bar (to x 58), the tab bar and floating Run toolbar (to y 88), and the
# minimap with its zoom controls in the bottom right corner (from x 1025, y 545).
LEFT, TOP, RIGHT, BOTTOM = 58, 88, 1280, 800
MINIMAP_LEFT, MINIMAP_TOP = 1025, 545
TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
NODE_TEXT_SIZE, LOD_FONT_SIZE = 14, 8  # LiteGraph stops drawing node text when 14 px * zoom < 8 px


def ui(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def on_screen(node: dict, ds: dict) -> tuple[float, float, float, float]:
    """The node's rectangle, title bar included, in window pixels (LiteGraph: screen = (canvas + offset) * scale)."""
    (x, y), (w, h), s, (ox, oy) = node["pos"], node["size"], ds["scale"], ds["offset"]
    return (x + ox) * s, (y - TITLE_HEIGHT + oy) * s, (x + w + ox) * s, (y + h + oy) * s


def fetch(server, route: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(server.url + route, timeout=30) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def test_the_browser_lists_every_workflow_with_its_thumbnail(comfyui_server):
    assert len(NAMES) == 5
    assert sorted(p.stem for p in WORKFLOWS.glob("*.jpg")) == NAMES  # a thumbnail for each, none left over
    assert {PACK: sorted(NAMES)} == {k: sorted(v) for k, v in comfyui_server.get("/workflow_templates").items()}
    for name in NAMES:
        base = f"/api/workflow_templates/{PACK}/{urllib.parse.quote(name)}"
        status, _, body = fetch(comfyui_server, base + ".json")
        assert status == 200 and json.loads(body) == ui(name)
        status, kind, body = fetch(comfyui_server, base + ".jpg")
        assert status == 200 and kind == "image/jpeg", name
        thumbnail = Image.open(BytesIO(body))
        assert thumbnail.format == "JPEG" and thumbnail.size == (512, 512), name


@pytest.mark.parametrize("name", NAMES)
def test_the_name_reads_as_title_and_as_description(name):
    """The browser shows the name as the title and, with "-" and "_" made spaces, as the description: a name
    without them reads the same in both. Short enough for the card's one title line to hold most of it."""
    assert "_" not in name and "-" not in name
    assert name[0].isupper() and len(name) <= 42
    assert not set(name) & set('<>:"/\\|?*')  # a file name on every system


@pytest.mark.parametrize("name", NAMES)
def test_the_workflow_opens_framed(name):
    workflow = ui(name)
    ds = workflow["extra"]["ds"]
    assert NODE_TEXT_SIZE * ds["scale"] >= LOD_FONT_SIZE, f"zoom {ds['scale']}: node text would not be drawn"
    assert ds["scale"] <= 1.0
    for node in workflow["nodes"]:
        left, top, right, bottom = on_screen(node, ds)
        where = f"{node.get('title', node['type'])} at {left:.0f}, {top:.0f} to {right:.0f}, {bottom:.0f}"
        assert LEFT <= left and TOP <= top and right <= RIGHT and bottom <= BOTTOM, f"outside the view: {where}"
        assert right <= MINIMAP_LEFT or bottom <= MINIMAP_TOP, f"under the minimap: {where}"


@pytest.mark.parametrize("name", NAMES)
def test_no_node_covers_another(name):
    ds = {"scale": 1.0, "offset": [0, 0]}
    rects = [(node.get("title", node["type"]), on_screen(node, ds)) for node in ui(name)["nodes"]]
    for i, (first, a) in enumerate(rects):
        for second, b in rects[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], f"{first} overlaps {second}"


def test_the_staged_sampler_has_one_title(comfyui_server):
    """The node's display name, and no other title, wherever a shipped workflow uses it."""
    title = comfyui_server.object_info["SqueezeStagedSampler"]["display_name"]
    assert title == "Squeeze Staged KSampler"
    for name in NAMES:
        samplers = [node for node in ui(name)["nodes"] if node["type"] == "SqueezeStagedSampler"]
        assert samplers and all("title" not in node for node in samplers), name
        api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
        assert {node["_meta"]["title"] for node in api.values() if node["class_type"] == "SqueezeStagedSampler"} == {title}
