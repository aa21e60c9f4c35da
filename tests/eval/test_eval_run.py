"""The whole evaluation path on a DreamBench subset with tiny models: generation (resumable, split over processes),
scoring, the ablations and the report; plus what the ablation knobs change."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from squeeze_core.errors import SqueezeInputError
from squeeze_core.eval.dreambench import DreamBench
from squeeze_core.eval.generate import benchmark_jobs, prompt_groups

SUBSET = ["--subjects", "dog", "backpack", "--prompts", "0", "20", "--width", "64", "--height", "64", "--steps", "3",
          "--long-side", "64"]


def squeeze(*args, cwd=None, launcher=()):
    command = [*launcher] if launcher else [sys.executable, "-m", "squeeze_core.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_ablations_end_to_end_write_a_report(tmp_path, dreambench_dir, dino_dir, clip_dir):
    out = tmp_path / "ablations"
    done = squeeze("ablate", "--dreambench", str(dreambench_dir), *SUBSET, "--taus", "0.9:0.1,0.7:0.3",
                   "--dino", str(dino_dir), "--clip", str(clip_dir), "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "ablations.json").read_text())
    assert [r["name"] for r in rows] == ["staged", "mllm_only", "vae_only", "refs_every_step", "tau_0.9_0.1", "tau_0.7_0.3",
                                         "layers_early", "layers_middle", "layers_late"]
    assert all(r["images"] == 4 and 0 < r["dino_i"] <= 1 and r["copy_paste"] is not None for r in rows)
    report = (out / "report.md").read_text()
    assert "| MLLM only | branches |" in report and "| UNO | 0.7600 | 0.8350 | 0.3040 |" in report
    for chart in ("metrics.png", "tau_sweep.png", "layer_weights.png"):
        assert f"({chart})" in report
        with Image.open(out / chart) as image:
            assert image.width >= 400 and image.height >= 150
    assert (out / "vae_only" / "dog" / "20_0.png").is_file() and (out / "layers_late" / "backpack" / "00_0.png").is_file()
    assert "layers 4-5" in (out / "report.md").read_text()  # the tiny MLLM has 6 layers: thirds 0-1, 2-3, 4-5


def test_eval_is_resumable_and_splits_over_two_processes(tmp_path, dreambench_dir, dino_dir, clip_dir):
    out = tmp_path / "eval"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", "-m", "squeeze_core.cli"]
    args = ("eval", "--dreambench", str(dreambench_dir), *SUBSET, "--seeds", "2", "--dino", str(dino_dir), "--clip", str(clip_dir),
            "--output", str(out))
    done = squeeze(*args, launcher=launch)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generated     4 new, 0 already there (process 0)" in done.stdout  # 8 images, half each
    images = sorted(p.relative_to(out / "generated").as_posix() for p in (out / "generated").rglob("*.png"))
    assert images == [f"{s}/{p}_{seed}.png" for s in ("backpack", "dog") for p in ("00", "20") for seed in (0, 1)]
    first = json.loads((out / "scores.json").read_text())
    assert first["overall"]["images"] == 8 and first["overall"]["subjects"] == 2

    again = squeeze(*args)  # one process now: everything is on disk already
    assert again.returncode == 0, again.stderr[-3000:]
    assert "generated     0 new, 8 already there" in again.stdout
    assert json.loads((out / "scores.json").read_text())["overall"] == first["overall"]


def test_jobs_are_shared_out_without_overlap(dreambench_dir):
    bench = DreamBench.load(dreambench_dir, ["dog", "cat", "can"])
    jobs = benchmark_jobs(bench, seeds=3)
    assert len(jobs) == 3 * 25 * 3
    groups = prompt_groups(jobs)
    assert len(groups) == 3 * 25 and all(len({job[:2] for job in group}) == 1 and len(group) == 3 for group in groups)
    shares = [[job for group in groups[rank::4] for job in group] for rank in range(4)]
    assert sorted(j for share in shares for j in share) == sorted(jobs)  # every job once
    assert max(map(len, shares)) - min(map(len, shares)) <= 3  # balanced to one prompt's seeds
    for share in shares:  # all 3 seeds of each of its prompts: a prompt's seeds share one process (and its conditioning)
        assert len(share) == 3 * len({job[:2] for job in share})


def test_conditioning_modes_and_layer_groups_change_the_image(encoder, dreambench_dir):
    from squeeze_core.dla import DLAConfig, DualLayerAggregator
    from squeeze_core.eval.metrics import open_rgb
    from squeeze_core.pipeline import GenerateConfig, SqueezePipeline
    from squeeze_core.testing import tiny_flux_transformer, tiny_flux_vae

    torch.manual_seed(0)
    dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info, attn_dim=32, num_heads=4)).eval()
    pipe = SqueezePipeline(encoder, dla, tiny_flux_transformer(), tiny_flux_vae())
    reference = open_rgb(dreambench_dir / "dog" / "00.jpg")
    latents = {}
    for mode in ("staged", "mllm_only", "vae_only", "refs_every_step"):
        config = GenerateConfig(prompt="a dog in the snow", steps=4, width=64, height=64, long_side=64, mode=mode, tau1=0.9, tau2=0.4)
        latents[mode] = pipe(config, [reference], progress=False)[0]
    modes = list(latents)
    assert all(not torch.allclose(latents[a], latents[b]) for i, a in enumerate(modes) for b in modes[i + 1 :])

    hidden = encoder.encode(["a dog in the snow"], [[reference]])
    with dla.restricted_to(range(2, 4)), torch.no_grad():
        weights = dla(hidden).layer_weights[0]
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]))
    assert float(weights[:, [0, 1, 4, 5]].abs().max()) == 0.0 and dla.text_lap.allowed_layers is None
    with pytest.raises(SqueezeInputError, match="not within the DLA's 6 layers"):
        dla.restricted_to(range(4, 8)).__enter__()


def test_eval_with_real_models_but_no_metric_models_fails_before_generating(tmp_path, dreambench_dir, tiny_mllm_dir, dino_dir):
    done = squeeze("eval", "--dreambench", str(dreambench_dir), *SUBSET, "--mllm", str(tiny_mllm_dir), "--output", str(tmp_path / "e"))
    assert done.returncode == 2 and "give --dino and --clip" in done.stderr
    done = squeeze("eval", "--dreambench", str(dreambench_dir), *SUBSET, "--mllm", str(tiny_mllm_dir), "--dino", str(dino_dir),
                   "--clip", str(dino_dir), "--output", str(tmp_path / "e"))
    assert done.returncode == 2 and "holds a 'vit' model, not 'clip'" in done.stderr
    assert not (tmp_path / "e" / "generated").exists()
