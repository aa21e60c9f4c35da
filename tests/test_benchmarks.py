"""The benchmark scripts keep running (their figures are printed, not asserted; FLOP counts are deterministic)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dla_cost_benchmark_runs_and_reports_the_ratio():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dla_cost.py"), "--repeats", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    ratio = float(re.search(r"DLA / one FLUX step\s+([\d.]+)%", result.stdout).group(1))
    assert 0 < ratio < 1.0, result.stdout  # a FLOP count, not a timing: the design target itself


def test_training_step_benchmark_runs_every_variant():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--rounds", "1", "--batch-size", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^(stage [12].*?)\s+([\d.]+)\s+([\d.]+)-([\d.]+)\s+([\d.]+)$", result.stdout, re.M)
    assert [r[0] for r in rows] == ["stage 1", "stage 1, one forward per sample", "stage 2", "stage 2, references one at a time",
                                    "stage 2, grad. checkpointing"], result.stdout
    assert all(float(r[1]) > 0 for r in rows) and float(rows[0][4]) == 1.0


def test_headless_generation_benchmark_counts_the_work_per_image():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "headless_generate.py"), "--rounds", "1", "--prompts", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = {(name, int(seeds)): (float(passes), float(encodes)) for name, seeds, passes, encodes in
            re.findall(r"^\s+(recompute|shipped)\s+(\d)\s+[\d.]+\s+[\d.]+-[\d.]+\s+([\d.]+)\s+([\d.]+)$", result.stdout, re.M)}
    assert rows[("recompute", 1)] == rows[("recompute", 4)] == (4.0, 1.0), result.stdout
    # shipped: 2 passes for the first prompt (denoising phase 3 gets no step at 8 steps, 256 px), 1 for the second (negative kept)
    assert rows[("shipped", 1)] == (1.5, 1.0) and rows[("shipped", 4)] == (0.375, 0.25), result.stdout
    unmerged, merged = (float(x) for x in re.findall(r"([\d.]+) TFLOP", result.stdout))
    assert unmerged > merged > 0


def test_real_size_benchmark_runs_end_to_end_at_reduced_depth(tmp_path):
    """benchmarks/real_size.py's GPU run, on the CPU at one block of each kind: every code path it takes (the ComfyUI
    nodes on ComfyUI's Flux, the headless pipeline, the Trainer's stage-2 step) runs, and the figures it writes hold
    together. The plan's parameter counts are those of the published FLUX.1-dev and InternVL3-8B."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "real_size.py"), "all", "--reduced", "--json-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    plan, infer, train = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("plan", "infer", "train"))

    assert abs(plan["parameters"]["FLUX.1-dev"] / 11.90e9 - 1) < 0.005
    assert abs(plan["mllms"]["InternVL3-8B"]["parameters"] / 7.94e9 - 1) < 0.005
    assert plan["mllms"]["InternVL3-8B"]["layers"] == 28 and plan["mllms"]["InternVL3-8B"]["hidden"] == 3584
    phases = plan["phases"]["InternVL3-8B"]
    assert phases["sample_fp8"] < phases["sample_bf16"] < phases["resident_bf16"]
    headless = phases["headless"]  # squeeze generate's combinations, decode included
    assert headless["--offload-mllm --flux-quantization fp8 (or int8)"] < 0.95 * 24 < headless["everything resident (bf16)"]
    assert headless["--offload-mllm"] < headless["everything resident (bf16)"]
    assert plan["flux_activation_source"].startswith("measured") and 1 < plan["flux_activation_gib"] < 3

    comfy = infer["comfy"]
    assert comfy["identical_to_ksampler"] is True  # the staged sampler with one conditioning is KSampler
    assert comfy["mllm_loaded_bytes_after_encode"] == 0  # offloaded through ComfyUI's memory manager
    encodes = comfy["workflow_encodes"]  # the workflow's two encodes, repeated with new prompts
    assert encodes["resident"]["bytes_moved"] == 0 < encodes["offload after encode"]["bytes_moved"]
    assert encodes["resident"]["s"]["n"] == encodes["offload after encode"]["s"]["n"] == infer["sizes"]["rounds"]
    assert sum(comfy["stage_calls"].values()) == infer["sizes"]["steps"]
    assert comfy["stage_calls"]["2"] > 0  # the reference latents were used
    assert 0 < comfy["token_ideal_ratio"] < 1
    assert infer["tokens"]["image"] == (infer["sizes"]["width"] // 16) * (infer["sizes"]["height"] // 16)
    for variant in ("ksampler", "staged_same", "staged", "every_step"):
        assert comfy["sample_s"][variant]["median"] > 0

    assert [(s["batch_size"], s["gradient_checkpointing"]) for s in train["settings"]] == [(1, True), (1, False), (2, True), (2, False)]
    for setting in train["settings"]:
        assert "error" not in setting, setting
        assert setting["step_s"] > setting["train_step_s"] > 0 and 0 < setting["mllm_share"] < 1


def test_mllm_residency_benchmark_shows_the_second_encode_of_a_resident_mllm_moves_nothing(comfyui_dir):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "mllm_residency.py"), "--rounds", "2", "--comfyui", str(comfyui_dir)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    megabytes = {line[:22].strip(): [float(x) for x in re.findall(r"([\d.]+) MB", line)]
                 for line in result.stdout.splitlines() if line.startswith(("resident", "offload"))}
    (first, later), offloaded = megabytes["resident (default)"], megabytes["offload after encode"]
    assert first > 0 and later == 0.0  # loaded once, then nothing moves
    # in and out twice on the first round; then only the prompt + reference encode: the empty negative is kept
    assert offloaded == pytest.approx([4 * first, 2 * first], abs=0.11)  # (printed to 0.1 MB)
    assert megabytes["offload, no host copy"] == offloaded  # the same moves; on the CPU no copy is kept
