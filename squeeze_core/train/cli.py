"""`squeeze train` and `squeeze convert-uno`: two-stage training from the command line (see squeeze_core/train).

    squeeze train                                   # embedded default: a CPU smoke run on the embedded mini models
    squeeze train --config stage1.yaml --set max_steps=100
    accelerate launch --num_processes 8 -m squeeze_core.cli train --config stage1.yaml
    squeeze convert-uno /data/UNO-1M --output uno1m.jsonl
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_TRAINING = dict(  # `squeeze train` without --config: a CPU smoke run on the embedded mini models and pairs
    resolution=64, bucket_step=16, reference_long_side=64, lora_rank=8, dla_attn_dim=32, dla_num_heads=4,
    base_dtype="float32", mixed_precision="no", gradient_checkpointing=False, max_steps=20, checkpoint_every=10,
    num_workers=0, learning_rate=1e-3, output_dir="squeeze-train-demo",
)


def add_parsers(commands) -> None:
    train = commands.add_parser("train", help="train the DLA and the FLUX LoRA (training stage 1 or 2; accelerate launch for several GPUs)")
    train.add_argument("--config", help="YAML or JSON training config (default: a smoke run on the embedded mini models)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config setting; repeat for several")
    train.set_defaults(func=run_train)

    uno = commands.add_parser("convert-uno", help="write a training manifest for an unpacked UNO-1M")
    uno.add_argument("root", help="the UNO-1M directory (holds images/ and uno_1m_total_labels.json or labels/)")
    uno.add_argument("--output", default="uno1m_manifest.jsonl", help="manifest to write")
    uno.add_argument("--labels", help="a labels JSON other than the default")
    uno.add_argument("--min-score", type=float, default=4.0, help="keep pairs with score_final >= this (default 4.0)")
    uno.add_argument("--both-directions", action="store_true", help="also train each pair the other way round")
    uno.set_defaults(func=run_convert_uno)


def run_train(args) -> None:
    from .config import TrainConfig
    from .trainer import train

    if args.config is None:
        own_data = any(item.split("=", 1)[0].strip() == "manifest" for item in args.set or [])
        print("No --config given: training Squeeze on the embedded mini models with "
              + ("the --set manifest (a smoke run)." if own_data else "the embedded benchmark's reference pairs (a smoke run)."))
        overrides = [f"{key}={value}" for key, value in EMBEDDED_TRAINING.items()] + list(args.set or [])
    else:
        overrides = list(args.set or [])
    config = TrainConfig.from_file(args.config, overrides)
    result = train(config)
    if not result.main_process:
        return
    if result.already_complete:
        print(f"complete      {config.output_dir} already holds this run at step {result.steps} of {config.total_steps}: "
              "nothing to train (raise max_steps, or give another output_dir)")
        return
    if result.losses:
        print(f"trained       training stage {config.training_stage}, steps {result.steps - len(result.losses) + 1}..{result.steps}, "
              f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    print(f"skipped       {result.skipped} image(s)")
    print(f"conditions    {result.condition_counts}")
    print(f"exported      {Path(config.output_dir) / 'squeeze_dla.safetensors'} (models/squeeze/), "
          f"{Path(config.output_dir) / 'squeeze_flux_lora.safetensors'} (models/loras/)")


def run_convert_uno(args) -> None:
    from .. import checks
    from .uno import convert_uno

    checks.finite(args.min_score, "--min-score")
    counts = convert_uno(args.root, args.output, args.labels, args.min_score, args.both_directions)
    print(f"wrote         {counts['written']} samples to {args.output}")
    print(f"left out      {counts['low_score']} below score {args.min_score}, {counts['missing_image']} with a missing "
          f"image, {counts['malformed']} malformed")
