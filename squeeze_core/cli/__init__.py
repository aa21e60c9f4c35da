"""The `squeeze` command: a thin dispatcher. Each verb lives with its subject and brings its own parser.

    squeeze encode                      squeeze_core/cli/encode.py     MLLM + DLA on a prompt and its references
    squeeze generate                    squeeze_core/cli/generate.py   one image, headless, staged as in ComfyUI
    squeeze score | eval | ablate       squeeze_core/eval/cli.py       DreamBench metrics, generation, ablations
    squeeze train | convert-uno         squeeze_core/train/cli.py      two-stage training, UNO-1M manifests
    squeeze mini ...                    squeeze_core/mini/cli.py       the miniature world and its base models

Every verb runs without arguments on an embedded default (no download). Options shared by the verbs that load models
are in squeeze_core/cli/models.py; their defaults come from the config dataclasses (GenerateConfig, EncoderConfig).
A bad input exits with status 2 and one line that names it; -v adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import SqueezeError

VERB_MODULES = ("squeeze_core.cli.encode", "squeeze_core.cli.generate", "squeeze_core.eval.cli", "squeeze_core.train.cli",
                "squeeze_core.mini.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeeze", description="Squeeze: MLLM-conditioned subject-driven generation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and conversions, show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in VERB_MODULES:
        importlib.import_module(name).add_parsers(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        args.func(args)
    except SqueezeError as error:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"squeeze {args.command}: error: {error}", file=sys.stderr)
        if not args.verbose:
            print("(run with -v for the traceback)", file=sys.stderr)
        return 2
    return 0
