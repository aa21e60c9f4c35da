"""The `squeeze` command: a thin dispatcher. Each verb lives with its subject and brings its own parser.

    squeeze encode                      squeeze_core/cli/encode.py     MLLM + DLA on a prompt and its references
    squeeze generate                    squeeze_core/cli/generate.py   one image, headless, staged as in ComfyUI
    squeeze score | eval | ablate       squeeze_core/eval/cli.py       DreamBench metrics, generation, ablations
    squeeze train | convert-uno         squeeze_core/train/cli.py      two-stage training, UNO-1M manifests
    squeeze mini ...                    squeeze_core/mini/cli.py       the miniature world and its base models

Every verb runs without arguments on an embedded default (no download). Options shared by the verbs that load models
are in squeeze_core/cli/models.py; their defaults come from the config dataclasses (GenerateConfig, EncoderConfig).
A bad input exits with status 2 and one line that names it; any other failure is a bug of Squeeze's: one line that
says so, exit status 1; Ctrl-C: one line, exit status 130. `--debug` (or -v) adds the traceback. Every file is
written atomically, so neither leaves a partial file behind.
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
    parser.add_argument("-v", "--verbose", "--debug", action="store_true", help="log progress and conversions, show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in VERB_MODULES:
        importlib.import_module(name).add_parsers(commands)
    return parser


def main(argv=None) -> int:
    """The one boundary between Squeeze and its user: every exception ends here as one line and an exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a bad option, already printed as one line (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        args.func(args)
    except SqueezeError as error:
        return _fail(args, f"error: {error}", 2)
    except KeyboardInterrupt:
        return _fail(args, "interrupted; no partial file was kept (every file is written whole or not at all)", 130)
    except MemoryError:
        return _fail(args, "out of memory: use a smaller size, fewer seeds or references, or --device cuda", 1)
    except Exception as error:  # the boundary: anything else is a defect of Squeeze, reported as one
        return _fail(args, f"internal error: {type(error).__name__}: {error}. This is a bug, please report it "
                           "(with the output of --debug).", 1)
    return 0


def _fail(args, message: str, status: int) -> int:
    _close_progress_bars()  # so the message is the last line, not followed by a bar closed later
    if args.verbose:
        import traceback

        traceback.print_exc()
    print(f"squeeze {args.command}: {message}", file=sys.stderr)
    if not args.verbose and status != 130:
        print("(run with --debug for the traceback)", file=sys.stderr)
    return status


def _close_progress_bars() -> None:
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
