"""Every shipped UI workflow and its API twin describe the same graph: nodes, links and widget values."""

import json
from pathlib import Path

import pytest
from workflow_convert import ui_to_api

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def test_every_workflow_has_an_api_twin():
    assert NAMES == sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json"))
    assert {
        "Squeeze subject from one reference", "Squeeze subject from three references",
        "FLUX.1 dev text to image, staged sampler", "FLUX.1 Kontext dev, reference joins late",
        "Squeeze mini, subject from one reference",
    } <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_files_are_in_sync(name, comfyui_server):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    converted = ui_to_api(ui, comfyui_server.object_info)
    assert converted == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    # every link in the UI file is a real output -> input connection of matching type
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        source = next(n for n in ui["nodes"] if n["id"] == src)
        target = next(n for n in ui["nodes"] if n["id"] == dst)
        assert source["outputs"][src_slot]["type"] == kind and link_id in source["outputs"][src_slot]["links"]
        assert target["inputs"][dst_slot]["link"] == link_id and target["inputs"][dst_slot]["type"] == kind


@pytest.mark.parametrize("name", NAMES)
def test_every_node_in_a_workflow_exists_on_the_server(name, comfyui_server):
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    missing = sorted({node["class_type"] for node in api.values()} - set(comfyui_server.object_info))
    assert missing == []
