"""argparse types for values with hard limits, so a bad one is argparse's own one-line error (exit 2) before any
work: `command.add_argument("--seed", type=arguments.seed)`. No torch here: building the parser stays light."""

from __future__ import annotations

import argparse

from ..limits import MAX_SEED


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text} is outside the seeds torch accepts: use an integer from 0 to 2**63 - 1")
    return value


def bounded_int(low: int, high: int, what: str):
    """An int type for argparse in [low, high]; `what` ends the message ('seeds per prompt')."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside [{low}, {high}] {what}")
        return value

    return parse
