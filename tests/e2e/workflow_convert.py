"""UI-format workflow -> API format, the way the ComfyUI frontend does it, driven by a server's /object_info.

Independent of tools/build_workflows.py on purpose: the sync test compares this conversion of each shipped UI file
with the shipped API twin.
"""

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def ui_to_api(ui: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}  # id -> [id, from_node, from_slot, to_node, to_slot, type]
    api = {}
    for node in ui["nodes"]:
        spec = object_info[node["type"]]
        declared = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        order = spec["input_order"].get("required", []) + spec["input_order"].get("optional", [])
        sockets = {inp["name"]: inp.get("link") for inp in node.get("inputs", [])}
        widget_values = list(node.get("widgets_values", []))
        inputs = {}
        for name in order:
            kind = declared[name][0]
            options = declared[name][1] if len(declared[name]) > 1 else {}
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                if sockets.get(name) is not None:  # a widget converted to an input
                    link = links[sockets[name]]
                    inputs[name] = [str(link[1]), link[2]]
                    continue
                inputs[name] = widget_values.pop(0)
                if options.get("control_after_generate"):
                    widget_values.pop(0)
                if options.get("image_upload"):
                    widget_values.pop(0)
            elif sockets.get(name) is not None:
                link = links[sockets[name]]
                assert link[3] == node["id"], f"link {link[0]} does not end at node {node['id']}"
                inputs[name] = [str(link[1]), link[2]]
        assert not widget_values, f"node {node['id']} ({node['type']}) has unused widget values {widget_values}"
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api
