"""Errors Squeeze raises on bad input.

Every message names the offending input, quotes the bad value and says what to do. They all derive from
`SqueezeError`, so a caller (the ComfyUI nodes, the CLI) can turn them into a clean message instead of a traceback.
"""


class SqueezeError(Exception):
    """Base class of every error Squeeze raises on purpose."""


class SqueezeInputError(SqueezeError, ValueError):
    """A prompt, image or option that cannot be used as given."""


class SqueezeModelError(SqueezeError):
    """A model directory that is missing or is not what it should be."""


class SqueezeWeightsError(SqueezeError):
    """A Squeeze weights file that is missing, malformed or made for another model."""
