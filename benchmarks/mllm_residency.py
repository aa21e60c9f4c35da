"""What one encode costs in ComfyUI: weight bytes moved onto and off the compute device, and time, for the MLLM kept
resident (the default) against offloaded after every encode, with and without the loader's kept host copy, measured
side by side in one run.

    python benchmarks/mllm_residency.py                                  # the embedded mini InternVL3, this CPU
    python benchmarks/mllm_residency.py --mllm models/mllm/InternVL3-8B-hf --dla models/squeeze/squeeze_dla.safetensors --gpu

Each round is the shipped workflow's two encodes, `Squeeze DLA Encode` on the prompt + reference and on the empty
negative; rounds alternate between the settings (interleaved, so drift hits all), --rounds of each (default 5).
It prints, per setting, the bytes moved by the first round and by each later one, and the median and range of a
round's time, and with --gpu the bytes the kept host copy copied (offloading with it copies nothing off the GPU, and
reloads from pinned memory; on the CPU there is nothing to copy, so no copy is made); and the bytes of the
language-model head that the loader leaves out (it is never read). ComfyUI comes from --comfyui (default:
$COMFYUI_PATH, else the copy the tests unpack into .cache/); --gpu lets ComfyUI use the GPU (without it, ComfyUI
runs with --cpu, where "moving" is a copy within host memory and the byte count is what matters).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def comfyui(path: Path, gpu: bool):
    sys.path.insert(0, str(path))
    import comfy.cli_args

    comfy.cli_args.args.cpu = not gpu
    import comfy.model_management  # noqa: F401

    spec = importlib.util.spec_from_file_location("squeeze_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["squeeze_pack"] = module
    spec.loader.exec_module(module)
    from squeeze_pack.nodes.folders import register_model_folders

    register_model_folders()


def lm_head_bytes(mllm_dir: Path, dtype_bytes: int = 2) -> int:
    """The head InternVL3 would carry: vocabulary x width, unless it is tied to the input embeddings."""
    text = json.loads((mllm_dir / "config.json").read_text())["text_config"]
    if text.get("tie_word_embeddings", False):
        return 0
    return int(text["vocab_size"]) * int(text["hidden_size"]) * dtype_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, default=Path(os.environ.get("COMFYUI_PATH") or ROOT / ".cache" / "comfyui-0.3.75"))
    parser.add_argument("--mllm", type=Path, help="an InternVL3 '-hf' directory (default: the embedded mini InternVL3)")
    parser.add_argument("--dla", type=Path, help="its DLA weights (default: the embedded mini DLA)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    comfyui(args.comfyui, args.gpu)
    import torch

    from squeeze_core.embedded import EmbeddedModels
    from squeeze_pack.nodes.dla_encode import encode
    from squeeze_pack.nodes.mini import mini_reference
    from squeeze_pack.nodes.mllm import load_mllm

    embedded = EmbeddedModels.packaged()
    mllm_dir, dla = args.mllm or embedded.mllm, args.dla or embedded.dla
    reference, prompt, _ = mini_reference(0, 0, 0)
    settings = {"resident (default)": (False, True), "offload after encode": (True, True),
                "offload, no host copy": (True, False)}  # (offload_after_encode, keep_host_copy)
    mllms = {name: load_mllm(str(mllm_dir), "auto", offload, keep) for name, (offload, keep) in settings.items()}
    moved = {name: [] for name in settings}
    seconds = {name: [] for name in settings}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, mllm in mllms.items():
                before, start = mllm.bytes_moved, time.perf_counter()
                encode(mllm, str(dla), prompt, [reference])
                encode(mllm, str(dla), "", [])
                seconds[name].append(time.perf_counter() - start)
                moved[name].append(mllm.bytes_moved - before)
    size = mllms["resident (default)"].patcher.model_size()
    print(f"MLLM {mllm_dir.name}: {size / 1e6:.1f} MB of weights loaded; lm_head left out: {lm_head_bytes(mllm_dir) / 1e6:.1f} MB "
          f"(bf16); ComfyUI on {'the GPU' if args.gpu else 'the CPU'}")
    print(f"{'setting':<22} {'first round':>14} {'later rounds (each)':>22} {'round time median [min, max]':>32}")
    for name in settings:
        later = sorted(set(moved[name][1:]))
        times = seconds[name]
        copies = mllms[name].patcher.host_copy
        copied = "" if copies is None else (f"   host copy, all rounds: {copies.bytes_to_device / 1e6:.1f} MB copied on, "
                                            f"{copies.bytes_to_host / 1e6:.1f} MB off")
        print(f"{name:<22} {moved[name][0] / 1e6:>11.1f} MB {', '.join(f'{b / 1e6:.1f}' for b in later):>19} MB "
              f"{statistics.median(times):>14.3f} s [{min(times):.3f}, {max(times):.3f}]{copied}")


if __name__ == "__main__":
    main()
