"""Squeeze core: the PyTorch modules shared by the ComfyUI nodes and the headless tools.

    from squeeze_core.mllm import InternVL3Encoder          # InternVL3 "-hf" -> every decoder layer
    from squeeze_core.dla import DualLayerAggregator, DLAConfig
    from squeeze_core.weights import load_dla, save_dla
    from squeeze_core.conditioning import encode_conditioning

This package never imports ComfyUI. Importing it is cheap: submodules load torch / transformers when used.
"""

__version__ = "0.1.0"
