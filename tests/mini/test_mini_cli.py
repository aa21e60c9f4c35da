"""`squeeze mini all --quick`: the whole path (world, judge, VAE, FLUX + T5, InternVL3, Squeeze's two training
stages and their scoring, report) through the installed console script, and every model it writes loads through
the loaders real checkpoints go through."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_core.flux import load_flux_transformer
from squeeze_core.mini.flux_base import MiniTextEncoder
from squeeze_core.mllm import InternVL3Encoder, TokenType
from squeeze_core.vae import load_flux_vae


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    squeeze = shutil.which("squeeze", path=str(Path(sys.executable).parent))
    assert squeeze, "the `squeeze` console script is not installed beside this Python"
    result = subprocess.run([squeeze, "mini", "all", "--quick", "--out", str(root / "run"), "--docs", str(root / "docs")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_quick_run_writes_every_phase_and_its_timings(quick_run):
    root, result = quick_run
    world = json.loads((root / "run/stats/world.json").read_text())
    pretrain = json.loads((root / "run/stats/pretrain.json").read_text())
    assert world["quick"] and world["world"]["heldout_identities"] == 4
    assert set(world["judge"]["validation"]) >= {"ground truth", "wrong identity", "wrong scene", "copy-paste"}
    for model in ("vae", "flux", "mllm"):
        assert pretrain[model].get("losses") or pretrain[model].get("loss_curve"), model
    assert {"vae: training", "flux: training", "mllm: training"} <= set(pretrain["seconds"])
    for phase in ("world", "pretrain", "train", "report"):
        assert re.search(rf"^{phase}: \d+ s$", result.stdout, re.M), result.stdout


def test_quick_run_trains_squeeze_with_the_training_code_and_scores_every_variant(quick_run):
    from squeeze_core.mini.squeeze import AGGREGATIONS, AGGREGATOR_VARIANTS, MiniSqueezeConfig
    from squeeze_core.train.config import TrainConfig

    root, result = quick_run
    stats = json.loads((root / "run/stats/squeeze.json").read_text())
    quick = MiniSqueezeConfig.quick()
    assert list(stats["training"]) == [f"{a}-seed0" for a in AGGREGATIONS]  # --quick: one seed per aggregator
    for model, stages in stats["training"].items():
        assert [len(stages[s]["losses"]) for s in ("stage1", "stage2")] == [quick.stage1_steps, quick.stage2_steps], model
        assert "mllm_refs+latents" in stages["stage2"]["conditions"] and "mllm_refs+latents" not in stages["stage1"]["conditions"]
    stage2 = TrainConfig.from_file(root / "run/squeeze/joint-seed0/stage2/train_config.json")
    assert stage2.training_stage == 2 and Path(stage2.init_from) == root / "run/squeeze/joint-seed0/stage1"
    assert stage2.dla_aggregation == "joint" and Path(stage2.transformer) == root / "run/models/flux/transformer"
    dual = stats["scores"]["dual-seed0"]
    release = stats["release"]  # the published model: dual-seed0's stage 1, its own longer stage 2, every variant scored
    assert list(release["training"]) == ["stage2"] and len(release["training"]["stage2"]["losses"]) == quick.release_stage2_steps
    published = TrainConfig.from_file(root / "run/squeeze/release/stage2/train_config.json")
    assert Path(published.init_from) == root / "run/squeeze/dual-seed0/stage1" and published.dla_aggregation == "dual"
    assert set(release["scores"]) == set(dual) and (root / "run/stats/squeeze_release.png").stat().st_size > 0
    assert {"staged", "mllm_only", "vae_only", "refs_every_step", "prompt_only", "layers_early"} <= set(dual)
    assert any(name.startswith("tau_") for name in dual)
    assert set(stats["scores"]["last_layer-seed0"]) == set(AGGREGATOR_VARIANTS)
    for model, variants in stats["scores"].items():
        for name, scores in variants.items():
            assert all(0 <= scores[m] <= 1 for m in ("identity", "prompt", "copy_paste")), (model, name)
            assert scores["images"] == 4 * quick.eval_prompts  # four held-out identities
    for model, losses in stats["denoising_losses"].items():  # the judge-free reading, for every trained model
        assert {"Squeeze, MLLM: right reference", "Squeeze, MLLM: no reference", "Squeeze, MLLM + VAE latents: wrong reference",
                "base FLUX: full caption", "base FLUX: prompt only"} <= set(losses), model
        assert all(0 < value < 10 for value in losses.values()), model
    mean, spread, count = stats["summary"]["dual"]["staged"]["identity"]
    assert (mean, spread, count) == (dual["staged"]["identity"], 0.0, 1)
    assert re.search(r"^dual +staged +identity \d\.\d{3} ± ", result.stdout, re.M), result.stdout
    layers = json.loads((root / "run/models/mllm/config.json").read_text())["text_config"]["num_hidden_layers"]
    assert set(stats["layer_weights"]) == {"text", "image"}
    for weights in stats["layer_weights"].values():
        assert len(weights) == layers and abs(sum(weights) - 1) < 1e-4
    probes = stats["reference_probe"]  # the VAE branch without the judge: the base FLUX, every model's two stages
    assert list(probes) == ["base FLUX"] + [f"{m} {s}" for m in sorted([*stats["training"], "release"]) for s in ("stage1", "stage2")
                                            if (root / "run/squeeze" / m / s).is_dir()]
    for probe in probes.values():
        assert abs(probe["difference"] - (probe["loss_wrong"] - probe["loss_right"])) < 1e-5 and probe["stderr"] > 0
        assert len(probe["attention_to_references"]) == 4 and all(0 < v < 1 for v in probe["attention_to_references"].values())
    report = (root / "docs/README.md").read_text()
    assert "### The VAE branch without the judge" in report and "| release stage2 | " in report


def test_quick_models_load_through_the_real_loaders(quick_run):
    root, _ = quick_run
    models = root / "run/models"
    vae = load_flux_vae(models / "vae", dtype=torch.float32)
    transformer = load_flux_transformer(models / "flux/transformer", dtype=torch.float32)
    assert vae.config.latent_channels == 16 and transformer.config.in_channels == 64
    text = MiniTextEncoder.from_pretrained(models / "flux")
    context, mask, pooled = text.encode(["a small toy on the beach, on the left"])
    assert context.shape[-1] == transformer.config.joint_attention_dim and pooled.shape[-1] == transformer.config.pooled_projection_dim
    encoder = InternVL3Encoder.from_pretrained(models / "mllm", dtype=torch.float32)
    from PIL import Image

    image = Image.open(next((root / "run/world/images/heldout").glob("*.png")))
    out = encoder.encode(["a small toy on the beach"], [[image]])
    assert out.hidden_states.shape[0] == encoder.info.num_layers
    assert int((out.token_types == TokenType.IMAGE).sum()) == encoder.tokens_per_image


def test_quick_report_shows_only_pictures_it_wrote(quick_run):
    root, _ = quick_run
    text = (root / "docs/README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(pictures) >= 8
    for picture in pictures:
        assert (root / "docs" / picture).is_file(), picture
    assert "| ground truth |" in text and "| total |" in text


def test_train_without_base_models_is_a_one_line_error_that_writes_nothing(tmp_path):
    squeeze = shutil.which("squeeze", path=str(Path(sys.executable).parent))
    result = subprocess.run([squeeze, "mini", "train", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "squeeze mini pretrain --out" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_publish_writes_the_embedded_layout_with_a_manifest(quick_run, tmp_path):
    """`publish` of the quick run into a scratch folder: the same files as the shipped copy (the quick models are
    smaller, the layout is the same), a manifest whose hashes match, and a complete set by EmbeddedModels' check."""
    from squeeze_core.embedded import PACKAGED, EmbeddedModels, file_hashes
    from squeeze_core.mini.build import MiniRun
    from squeeze_core.mini.embedded import publish

    root, _ = quick_run
    destination = publish(MiniRun(root / "run", quick=True), tmp_path / "weights")
    published = EmbeddedModels(destination).check()
    manifest = published.manifest()
    assert manifest["files"] == file_hashes(destination) and manifest["quick"] is True
    assert manifest["squeeze_model"] == "release"  # the long-stage-2 model, not an ablation model
    for name in ("squeeze_dla.safetensors", "squeeze_flux_lora.safetensors"):
        assert (destination / "squeeze" / name).read_bytes() == (root / "run/squeeze/release/stage2" / name).read_bytes()
    assert manifest["command"] == f"squeeze mini all --out {root / 'run'} --seed 0 --quick"
    def layout(names):  # the quick world has fewer held-out reference renders
        return {n for n in names if not n.startswith("benchmark/images/")}

    assert layout(manifest["files"]) == layout(EmbeddedModels.packaged().manifest()["files"]) == layout(file_hashes(PACKAGED))
    from squeeze_core.mini.data import load_world

    assert load_world(published.world_dir).train == [] and len(load_world(published.world_dir).heldout) == 4
    assert published.subjects == 4 and published.subject(3).words == load_world(root / "run" / "world").heldout[3].identity.details()
    pairs = [json.loads(line) for line in published.pairs.read_text(encoding="utf-8").splitlines()]
    assert len(pairs) == 4 * 2 and all((published.world_dir / p["target"]).is_file() for p in pairs)
    assert all(p["references"] != [p["target"]] for p in pairs)
    assert not list(tmp_path.glob(".*partial"))


def test_pretrain_variant_benchmark_retrains_one_part_beside_the_run(quick_run, tmp_path):
    """benchmarks/mini_pretrain_variant.py: the VAE with one halving fewer, retrained by `squeeze mini pretrain`'s
    code into --out (the run untouched), FLUX on its 4 px grid, both with the subject's box weighted in their losses
    (the boxes come from the world's renders), the table beside the run's figures; the untouched models are links,
    so Squeeze can train on the result."""
    root, _ = quick_run
    run, out = root / "run", tmp_path / "variant"
    before = (run / "models" / "vae" / "config.json").read_bytes()
    result = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "benchmarks" / "mini_pretrain_variant.py"),
                             "--run", str(run), "--out", str(out), "--quick", "--vae", "channels=16,32,32",
                             "subject_weight=4", "--flux", "subject_weight=2.0"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = dict(re.findall(r"^\| (VAE identity|FLUX identity|VAE PSNR \(dB\)) \| [\d.]+ \| ([\d.]+) \|$", result.stdout, re.M))
    assert set(rows) == {"VAE identity", "FLUX identity", "VAE PSNR (dB)"}, result.stdout
    assert json.loads((out / "models" / "vae" / "config.json").read_text())["block_out_channels"] == [16, 32, 32]
    assert (run / "models" / "vae" / "config.json").read_bytes() == before
    assert (out / "models" / "mllm").is_symlink() and (out / "world").is_symlink()
    assert load_flux_vae(out / "models" / "vae", dtype=torch.float32).config.latent_channels == 16
    bad = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "benchmarks" / "mini_pretrain_variant.py"),
                          "--run", str(run), "--out", str(tmp_path / "bad"), "--vae", "chanels=16,32,32"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "MiniVAEConfig has no field 'chanels'" in bad.stderr and not (tmp_path / "bad").exists()
    bad = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "benchmarks" / "mini_pretrain_variant.py"),
                          "--run", str(run), "--out", str(tmp_path / "bad"), "--flux", "subject_weight=0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "MiniFluxConfig.subject_weight must be > 0" in bad.stderr and not (tmp_path / "bad").exists()


def test_squeeze_steps_benchmark_sets_stage_2_fields_and_records_the_conditions(quick_run, tmp_path):
    """benchmarks/mini_squeeze_steps.py --stage2 mllm_reference_drop=1 --oracle on the quick run's world and models:
    stage 2's train_config.json carries the change and the oracle manifest (every reference is its pair's target),
    stage 1's has neither, and the recorded stage-2 conditions never let the MLLM read the references (so the
    reference latents are the only way to the identity). --score-every keeps and scores the stage-2 checkpoints on
    the way (the last is the final model). A field TrainConfig lacks is exit 2, nothing written."""
    root, _ = quick_run
    out = tmp_path / "steps"
    out.mkdir()
    (out / "world").symlink_to(root / "run" / "world")
    (out / "models").symlink_to(root / "run" / "models")
    script = str(Path(__file__).parents[2] / "benchmarks" / "mini_squeeze_steps.py")
    result = subprocess.run([sys.executable, script, "--steps", "2:6", "--out", str(out), "--stage2", "mllm_reference_drop=1",
                             "--oracle"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = out / "squeeze" / "2-6-mllm_reference_drop1-oracle"
    stage1 = json.loads((folder / "stage1" / "train_config.json").read_text())
    stage2 = json.loads((folder / "stage2" / "train_config.json").read_text())
    assert stage1["mllm_reference_drop"] == 0.1 and stage2["mllm_reference_drop"] == 1
    assert Path(stage1["manifest"]).name == "pairs.jsonl" and stage2["manifest"] == str(out / "oracle_pairs.jsonl")
    pairs = [json.loads(line) for line in (root / "run" / "world" / "pairs.jsonl").read_text().splitlines()]
    oracle = [json.loads(line) for line in (out / "oracle_pairs.jsonl").read_text().splitlines()]
    assert len(oracle) == len(pairs) and all(o["references"] == [o["target"]] for o in oracle)
    assert [Path(o["target"]).name for o in oracle] == [Path(p["target"]).name for p in pairs]
    assert all(Path(o["target"]).is_file() for o in oracle)
    row = json.loads((out / "results.json").read_text())["2:6"]
    assert row["stage2_changes"] == {"mllm_reference_drop": 1, "manifest": str(out / "oracle_pairs.jsonl")}
    assert sum(row["conditions"]["stage2"].values()) == 6 * 16
    assert not any("mllm_refs" in name for name in row["conditions"]["stage2"]) and "prompt+latents" in row["conditions"]["stage2"]
    assert set(row["scores"]) == {"staged", "mllm_only", "vae_only", "prompt_only"}
    curve = subprocess.run([sys.executable, script, "--steps", "2:5", "--out", str(out), "--score-every", "2"],
                           capture_output=True, text=True, timeout=600)
    assert curve.returncode == 0, curve.stderr[-3000:]
    row = json.loads((out / "results.json").read_text())["2:5"]
    stage2 = out / "squeeze" / "2-5" / "stage2"
    assert sorted(p.name for p in stage2.glob("checkpoint-*")) == ["checkpoint-00000002", "checkpoint-00000004", "checkpoint-00000005"]
    assert list(row["curve"]) == ["2", "4", "5"] and row["curve"]["5"] == row["scores"]
    assert all(set(scores) == set(row["scores"]) for scores in row["curve"].values())
    assert row["stage2_changes"] == {"checkpoint_every": 2, "keep_checkpoints": 1_000_000}
    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "world").symlink_to(root / "run" / "world")
    (crops / "models").symlink_to(root / "run" / "models")
    cropped = subprocess.run([sys.executable, script, "--steps", "2:3", "--out", str(crops), "--crop-references"],
                             capture_output=True, text=True, timeout=600)
    assert cropped.returncode == 0, cropped.stderr[-3000:]
    derived = crops / "crops" / "world"
    for stage in ("stage1", "stage2"):  # both stages train on the cropped references
        config = json.loads((crops / "squeeze" / "2-3-crop" / stage / "train_config.json").read_text())
        assert config["manifest"] == str(crops / "crops" / "world" / "pairs.jsonl")
    rows = [json.loads(line) for line in (derived / "pairs.jsonl").read_text().splitlines()]
    assert [Path(r["target"]) for r in rows] == [(root / "run" / "world" / p["target"]).resolve() for p in pairs]
    assert [r["prompt"] for r in rows] == [p["prompt"] for p in pairs]
    from squeeze_core.mini.data import load_world
    from squeeze_core.mini.world import subject_box

    sys.path.insert(0, str(Path(script).parent))
    from mini_squeeze_steps import crop_square

    renders = {r.path.name: (t.identity, r) for t in load_world(root / "run" / "world").train for r in t.renders}
    for row, pair in zip(rows, pairs):
        reference = Path(row["references"][0])
        assert reference.is_relative_to(derived.resolve()) and reference.name == Path(pair["references"][0]).name
        identity, render = renders[reference.name]
        whole = crop_square(subject_box(identity, render.scene, render.seed)) == (0, 0, 64, 64)  # a subject too wide to crop
        with Image.open(reference) as crop, Image.open(root / "run" / "world" / pair["references"][0]) as original:
            assert crop.size == original.size == (64, 64) and np.array_equal(np.asarray(crop), np.asarray(original)) == whole

    for held, original in zip(load_world(derived).heldout, load_world(root / "run" / "world").heldout):
        assert held.references[0].path.is_file() and held.references[0].path != original.references[0].path
        box = subject_box(original.identity, original.references[0].scene, original.references[0].seed)
        left, top, right, bottom = crop_square(box)
        assert 0 <= left <= box[0] and 0 <= top <= box[1] and box[2] <= right <= 64 and box[3] <= bottom <= 64
        assert right - left == bottom - top <= 64  # a square around the subject (the whole render only if it must be)
    assert crop_square((0, 0, 64, 64)) == (0, 0, 64, 64) and crop_square((58, 50, 64, 64)) == (46, 46, 64, 64)
    assert (root / "run" / "world" / "pairs.jsonl").read_text() == "".join(json.dumps(p) + "\n" for p in pairs)  # untouched
    bad = subprocess.run([sys.executable, script, "--out", str(tmp_path / "bad"), "--score-every", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--score-every -1" in bad.stderr and not (tmp_path / "bad").exists()
    bad = subprocess.run([sys.executable, script, "--out", str(tmp_path / "bad"), "--stage2", "mlm_reference_drop=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "TrainConfig has no field 'mlm_reference_drop'" in bad.stderr and not (tmp_path / "bad").exists()
    bad = subprocess.run([sys.executable, script, "--out", str(tmp_path / "bad"), "--stage2", "mllm_reference_drop=2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "mllm_reference_drop=2 is a probability" in bad.stderr and not (tmp_path / "bad").exists()
