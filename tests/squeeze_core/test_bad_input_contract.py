"""The bad-input contract of the `squeeze` command, as a table a reader can check.

Every row runs the installed `squeeze` entry point as a subprocess with one mistake a user makes, and asserts:
exit status 2; the message names the input at fault (the `needle`); no traceback (that needs -v); no file left in
the output folder, hidden partial files included; and the mistake was caught before any model loaded (the
transformers loader prints "Loading weights", the embedded tiny MLLM is written with "Writing model shards": neither
may appear).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from squeeze_core.dla import DLAConfig, DualLayerAggregator
from squeeze_core.mllm import MLLMInfo
from squeeze_core.weights import save_dla

ROOT = Path(__file__).resolve().parents[2]
DREAMBENCH = ROOT.parent / "shared" / "dreambench"

# (verb and arguments, needle the message must contain). Paths are relative to the fixture folder (FILES below);
# OUT is an empty folder the command could write into.
CASES = [
    # --- generate: images
    ("generate --reference huge.png --output OUT/a.png", "--reference"),  # 20000 x 20000, a 48 KB 1-bit PNG
    ("generate --reference huge.png --output OUT/a.png", "MP limit"),
    ("generate --reference text.png --output OUT/a.png", "--reference"),  # a text file named .png
    ("generate --reference missing.png --output OUT/a.png", "--reference"),
    ("generate --reference folder --output OUT/a.png", "--reference"),
    ("generate --reference red.png --reference red.png --reference red.png --reference red.png --reference red.png "
     "--output OUT/a.png", "--max-references"),
    ("generate --max-references 0 --output OUT/a.png", "--max-references"),
    ("generate --flux-quantization fp8 --output OUT/a.png", "--flux-quantization"),  # fp8 needs an fp8 GPU
    ("encode --mllm-quantization fp8", "--mllm-quantization"),
    # --- generate: outputs
    ("generate --output folder", "--output"),  # an existing directory
    ("generate --output OUT/no_extension", "--output"),
    ("generate --output text.png/a.png", "--output"),  # a parent that is a file
    ("generate --output OUT/a.jpg", ".png"),
    # --- generate: numbers
    ("generate --cfg nan --output OUT/a.png", "--cfg"),
    ("generate --cfg inf --output OUT/a.png", "--cfg"),
    ("generate --cfg -1 --output OUT/a.png", "--cfg"),
    ("generate --guidance nan --output OUT/a.png", "--guidance"),
    ("generate --steps 0 --output OUT/a.png", "--steps"),
    ("generate --steps -3 --output OUT/a.png", "--steps"),
    ("generate --width 0 --output OUT/a.png", "--width"),
    ("generate --width 17 --output OUT/a.png", "--width"),
    ("generate --height 100 --output OUT/a.png", "--height"),
    ("generate --long-side 100 --output OUT/a.png", "--long-side"),
    ("generate --tau1 0.2 --tau2 0.5 --output OUT/a.png", "tau1"),
    ("generate --tau1 1.5 --output OUT/a.png", "tau1"),
    ("generate --tau2 nan --output OUT/a.png", "tau2"),
    # --- generate: devices
    ("generate --device cuda --output OUT/a.png", "--device"),  # this machine has no GPU (skipped where one is)
    ("generate --device cuda:3 --output OUT/a.png", "--device"),
    ("generate --device banana --output OUT/a.png", "--device"),
    # --- generate: model files
    ("generate --dla pickle.safetensors --output OUT/a.png", "pickle"),  # torch.save output renamed
    ("generate --dla missing.safetensors --output OUT/a.png", "models/squeeze/"),
    ("generate --dla dla_4x48.safetensors --output OUT/a.png", "made for"),  # another MLLM's DLA
    ("generate --dla dla_other_vocab.safetensors --output OUT/a.png", "vocabulary"),  # same shape, other language model
    ("generate --dla text.png --output OUT/a.png", "--dla"),
    ("generate --lora pickle.safetensors --output OUT/a.png", "pickle"),
    ("generate --lora dla_mini.safetensors --output OUT/a.png", "--lora"),  # a DLA given as the LoRA
    ("generate --lora missing.safetensors --output OUT/a.png", "--lora"),
    ("generate --transformer folder --output OUT/a.png", "--transformer and --vae together"),
    ("generate --transformer folder --vae folder --output OUT/a.png", "--transformer"),
    ("generate --mllm missing_mllm --output OUT/a.png", "does not exist"),
    ("generate --mllm text.png --output OUT/a.png", "is a file"),
    ("generate --mllm folder --output OUT/a.png", "config.json"),
    # --- encode
    ("encode --plot OUT/layers", "--plot"),
    ("encode --plot text.png/layers.png", "--plot"),
    ("encode --save OUT/cond.png", "--save"),
    ("encode --save folder", "--save"),
    ("encode --reference huge.png", "MP limit"),
    ("encode --dla dla_4x48.safetensors", "made for"),
    ("encode --device cuda", "--device"),
    ("encode --max-references 1 --reference red.png --reference red.png", "--max-references"),
    # --- eval / ablate
    ("eval --dreambench DREAMBENCH --output text.png", "--output"),
    ("eval --dreambench DREAMBENCH --output OUT/run --seeds 0", "--seeds"),
    ("eval --dreambench DREAMBENCH --output OUT/run --steps 0", "--steps"),
    ("eval --dreambench DREAMBENCH --output OUT/run --cfg nan", "--cfg"),
    ("eval --dreambench DREAMBENCH --output OUT/run --device cuda", "--device"),
    ("eval --dreambench DREAMBENCH --output OUT/run --dla pickle.safetensors", "pickle"),
    ("ablate --dreambench DREAMBENCH --output OUT/run --taus 0.2:0.5", "tau1"),
    ("ablate --dreambench DREAMBENCH --output OUT/run --width 30", "--width"),
    # --- train (OUT/run must not even be created)
    ("train --set manifest=bad.jsonl --set output_dir=OUT/run", "bad.jsonl"),  # a malformed line
    ("train --set lora_rank=0 --set output_dir=OUT/run", "lora_rank"),
    ("train --set training_stage=2 --set output_dir=OUT/run", "init_from"),
    ("train --set no_such_setting=1 --set output_dir=OUT/run", "no_such_setting"),
    ("train --config missing.yaml", "missing.yaml"),
    # --- second pass: values past what the machine or the method can take, caught before any work
    ("generate --seed 1180591620717411303424 --output OUT/a.png", "--seed"),
    ("generate --seed -1 --output OUT/a.png", "--seed"),
    ("generate --identity 30 --output OUT/a.png", "--identity"),  # the mini benchmark's held-out identities are 0 to 29
    ("encode --seed 1180591620717411303424", "--seed"),
    ("mini world --seed 1180591620717411303424 --out OUT/run", "--seed"),
    ("mini report --out OUT/run --docs OUT/docs", "squeeze mini world"),  # no run there: no empty docs/ left either
    ("train --set seed=1180591620717411303424 --set output_dir=OUT/run", "seed"),
    ("eval --dreambench DREAMBENCH --output OUT/run --seeds 100000000", "--seeds"),
    ("eval --dreambench DREAMBENCH --output OUT/run --prompts 99", "--prompts"),
    ("generate --height 100000 --output OUT/a.png", "--height"),
    ("generate --width 8192 --output OUT/a.png", "SQUEEZE_MAX_IMAGE_SIDE"),
    ("generate --steps 100000 --output OUT/a.png", "--steps"),
    ("generate --cfg 1e300 --output OUT/a.png", "--cfg"),
    ("generate --guidance 1e300 --output OUT/a.png", "--guidance"),
    ("train --set max_steps=.inf --set output_dir=OUT/run", "max_steps"),
    ("train --set learning_rate=.nan --set output_dir=OUT/run", "learning_rate"),
    ("train --set warmup_steps=-3 --set output_dir=OUT/run", "warmup_steps"),
    ("convert-uno folder --min-score nan --output OUT/x.jsonl", "--min-score"),
    ("score --device banana", "--device"),
    # --- text and files that are not what they claim
    ("generate --prompt \udcffbad --output OUT/a.png", "--prompt"),  # the byte 0xff (subprocess passes U+DCFF so), not UTF-8
    ("generate --negative-prompt \udcffbad --output OUT/a.png", "--negative-prompt"),
    ("generate --output OUT/" + "a" * 300 + ".png", "--output"),  # a name longer than the file system allows
    ("train --config latin1.yaml --set output_dir=OUT/run", "UTF-8"),
    ("train --set manifest=latin1.jsonl --set output_dir=OUT/run", "UTF-8"),
    ("generate --reference tiny.png --output OUT/a.png", "--reference"),  # 8 x 8 px
    ("generate --reference float.tiff --output OUT/a.png", "mode"),  # 32-bit float pixels
    ("generate --output OUT/a.png --sheet OUT/a.png", "--sheet"),  # the sheet would overwrite the image
    ("generate --lora truncated_lora.safetensors --output OUT/a.png", "truncated"),  # an interrupted copy
    ("generate --transformer no_weights --vae no_weights --output OUT/a.png", "no .safetensors weights"),
    # --- train: every path checked before output_dir (or its demo data) is created
    ("train --set output_dir=text.png", "output_dir"),  # a file
    ("train --set mllm=missing_mllm --set output_dir=OUT/run", "missing_mllm"),
    ("train --set training_stage=2 --set init_from=folder --set output_dir=OUT/run", "init_from"),  # no stage-1 weights
    ("train --set resume=folder --set output_dir=OUT/run", "resume"),
    ("train --set transformer=missing --set vae=missing --set output_dir=OUT/run", "transformer"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bad (and good) inputs the table refers to."""
    folder = tmp_path_factory.mktemp("inputs")
    Image.new("1", (20000, 20000)).save(folder / "huge.png")
    Image.new("RGB", (90, 60), (200, 30, 30)).save(folder / "red.png")
    (folder / "text.png").write_text("not an image\n")
    (folder / "folder").mkdir()
    torch.save({"weight": torch.zeros(2)}, folder / "pickle.safetensors")
    (folder / "bad.jsonl").write_text('{"references": ["red.png"], "target": "red.png", "prompt": "a toy"}\n{"references": [\n')
    save_dla(DualLayerAggregator(DLAConfig(num_layers=4, hidden_size=48, attn_dim=32, num_heads=4)), folder / "dla_4x48.safetensors")
    mini = DualLayerAggregator(DLAConfig(num_layers=6, hidden_size=96, attn_dim=32, num_heads=4))  # the embedded MLLM's shape
    save_dla(mini, folder / "dla_mini.safetensors", MLLMInfo("internvl", 6, 96, "mini-internvl3", "qwen2", 480))
    save_dla(mini, folder / "dla_other_vocab.safetensors", MLLMInfo("internvl", 6, 96, "other-internvl3", "qwen2", 151674))
    (folder / "latin1.yaml").write_bytes("max_steps: 2 # \xe9t\xe9\n".encode("latin-1"))
    (folder / "latin1.jsonl").write_bytes('{"references": ["r\xe9d.png"], "target": "red.png", "prompt": "a toy"}\n'.encode("latin-1"))
    Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "tiny.png")
    Image.new("F", (64, 64), 0.5).save(folder / "float.tiff")
    lora = (ROOT / "squeeze_core" / "embedded" / "weights" / "squeeze" / "squeeze_flux_lora.safetensors").read_bytes()
    (folder / "truncated_lora.safetensors").write_bytes(lora[:-100])
    (folder / "no_weights").mkdir()
    (folder / "no_weights" / "config.json").write_text("{}")
    return folder


def squeeze_command() -> str:
    found = shutil.which("squeeze", path=str(Path(sys.executable).parent))
    assert found, "the squeeze entry point is not installed next to this Python (pip install -e .)"
    return found


def run_case(command: str, files: Path, out: Path) -> subprocess.CompletedProcess:
    args = command.replace("OUT", str(out)).replace("DREAMBENCH", str(DREAMBENCH)).split()
    return subprocess.run([squeeze_command(), *args], capture_output=True, text=True, timeout=300, cwd=files)  # relative paths: files/


def test_every_bad_input_exits_2_naming_it_before_anything_loads(files, tmp_path):
    cases = [case for case in CASES if not (torch.cuda.is_available() and case[0].endswith("--device cuda"))]
    outs = [tmp_path / f"out{i}" for i in range(len(cases))]
    for out in outs:
        out.mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda item: run_case(item[0][0], files, item[1]), zip(cases, outs)))
    failures = []
    for (command, needle), out, result in zip(cases, outs, results):
        output = result.stdout + result.stderr
        problems = [
            f"exit {result.returncode}" if result.returncode != 2 else "",
            f"no {needle!r} in the message" if needle not in result.stderr else "",
            "a traceback" if "Traceback" in output else "",
            f"left {sorted(p.name for p in out.rglob('*'))}" if any(out.rglob("*")) else "",
            "a model loaded first" if "Loading weights" in output or "Writing model shards" in output else "",
        ]
        if any(problems):
            failures.append(f"squeeze {command}: {', '.join(p for p in problems if p)}\n    {result.stderr.strip()[-400:]}")
    assert not failures, f"{len(failures)} of {len(cases)} cases broke the contract:\n" + "\n".join(failures)
    assert len(cases) >= 40


def test_one_line_without_verbose_and_a_traceback_with_it(files, tmp_path):
    quiet = run_case("generate --cfg nan --output OUT/a.png", files, tmp_path)
    assert quiet.stderr.strip().splitlines() == ["squeeze generate: error: --cfg=nan must be a finite number in [0, 100].",
                                                 "(run with --debug for the traceback)"]
    loud = subprocess.run([squeeze_command(), "-v", "generate", "--cfg", "nan", "--output", str(tmp_path / "a.png")],
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 2 and "Traceback" in loud.stderr


def test_a_checkpoint_saved_by_current_transformers_is_accepted(tiny_mllm_dir, tmp_path):
    """Current transformers saves a processor's image settings nested in processor_config.json, and no
    preprocessor_config.json; such a folder loads (it was refused before)."""
    import json

    from squeeze_core.mllm import InternVL3Encoder

    folder = shutil.copytree(tiny_mllm_dir, tmp_path / "current-layout")
    image_processor = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").unlink()
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": image_processor, "processor_class": "InternVLProcessor"}))
    encoder = InternVL3Encoder.from_pretrained(folder, dtype=torch.float32)
    assert encoder.tile_size == 112 and encoder.encode(["a toy"]).hidden_states.shape[0] == 6


def test_training_a_finished_run_again_says_so_without_loading_anything(tmp_path):
    run = ["train", "--set", f"output_dir={tmp_path / 'run'}", "--set", "max_steps=2", "--set", "checkpoint_every=2"]
    first = subprocess.run([squeeze_command(), *run], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run([squeeze_command(), *run], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already holds this run at step 2 of 2: nothing to train" in again.stdout
    assert "Loading weights" not in again.stderr + again.stdout


def test_a_missing_image_is_counted_once_however_many_epochs_skip_it():
    from squeeze_core.train.data import SkipCounter

    skips = SkipCounter()
    for _ in range(3):  # three epochs meet the same two bad files
        skips.add("a.png", "is missing")
        skips.add("b.png", "is missing")
    assert skips.total == 2


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_file(tmp_path):
    """SIGINT while the models load or sample (after every check passed): one line, exit status 130, no traceback,
    and no image, sheet or temporary file in the output folder."""
    import os
    import signal
    import time

    process = subprocess.Popen([squeeze_command(), "generate", "--output", str(tmp_path / "a.png")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout.readline()  # the first line is printed once the checks have passed and loading begins
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    seen = f"exit {process.returncode}\nstdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}"
    assert process.returncode == 130, seen
    assert stderr.strip().splitlines()[-1].startswith("squeeze generate: interrupted") and "Traceback" not in stderr, seen
    assert list(tmp_path.iterdir()) == [], seen


def test_mini_never_writes_into_a_folder_of_someone_elses(tmp_path):
    foreign = tmp_path / "my-photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not a mini run")
    result = subprocess.run([squeeze_command(), "mini", "world", "--out", str(foreign)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "holds no mini run" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"]


def test_an_unexpected_exception_is_one_line_that_says_it_is_a_bug(monkeypatch, capsys):
    """The boundary of `squeeze`: an exception that is not a Squeeze error (here a verb whose code raises
    ZeroDivisionError) is exit status 1 and one line naming it as a bug; --debug adds the traceback."""
    from squeeze_core import cli

    def broken(args):
        return 1 / 0

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["generate"].set_defaults(func=broken)
    assert cli.main(["generate"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: division by zero. This is a bug, please report it" in err and "Traceback" not in err
    assert cli.main(["--debug", "generate"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_during_training_leaves_only_whole_checkpoints(tmp_path):
    """SIGINT while the smoke run trains and writes a checkpoint every step: one line, exit status 130, no hidden
    temporary checkpoint left, and every checkpoint folder that is there is complete (it resumes)."""
    import signal
    import time

    from squeeze_core.train.checkpoint import STATE_FILE

    run = tmp_path / "run"
    process = subprocess.Popen([squeeze_command(), "train", "--set", f"output_dir={run}", "--set", "max_steps=500",
                                "--set", "checkpoint_every=1", "--set", "keep_checkpoints=2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(run.glob("checkpoint-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    seen = f"exit {process.returncode}\nstderr: {stderr[-600:]!r}"
    assert process.returncode == 130 and stderr.strip().splitlines()[-1].startswith("squeeze train: interrupted"), seen
    assert "Traceback" not in stderr and list(run.glob(".checkpoint-*")) == [], seen
    checkpoints = list(run.glob("checkpoint-*"))
    assert checkpoints and all((c / STATE_FILE).is_file() for c in checkpoints), seen
