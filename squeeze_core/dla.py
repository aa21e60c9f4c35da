"""Dual Layer Aggregator (DLA), section 3.3 of the paper: one LAP for text tokens, one for image tokens.

Usage::

    dla = DualLayerAggregator(DLAConfig.for_mllm(encoder.info))          # or load_dla("squeeze_dla.safetensors")
    cond = dla(encoder.encode(prompts, references))
    cond.context        # (B, T', 4096) FLUX `context`, tokens in their MLLM order, right-padded
    cond.pooled         # (B, 768)      FLUX `y`
    cond.attention_mask # (B, T')       1 for real tokens
    cond.layer_weights  # (B, T', L)    per-token layer weights (sum to 1), for the analysis plot
    cond.token_types    # (B, T')       TokenType of each output token

Tokens are routed by the MLLM's token-type mask: TEXT tokens go through the text LAP, IMAGE tokens through the image
LAP, chat-template tokens through the text LAP (they are text to the MLLM, and the trailing ones summarise the turn)
or are dropped, per `template_tokens`. Padding is removed and re-added at the end, so each item's output does not
depend on what it was batched with. `pooled` is a projection of the mean of the text LAP's mixed features.

`aggregation` chooses between the method and the paper's two baselines (Table 4), with everything else the same:
    "dual"        a text LAP and an image LAP (the DLA)
    "joint"       one LAP for every token (`joint_lap`)
    "last_layer"  no layer weighting: every token's normalised last MLLM layer, one projection (`joint_lap`)
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from .errors import SqueezeInputError, SqueezeWeightsError
from .lap import LayerwiseAttentionPooling
from .mllm import MLLMInfo, MLLMOutput, TokenType

TEMPLATE_TOKEN_MODES = ("text", "drop")
AGGREGATIONS = ("dual", "joint", "last_layer")


@dataclass
class DLAConfig:
    num_layers: int = 28  # MLLM decoder layers to aggregate (InternVL3-8B: 28)
    hidden_size: int = 3584  # MLLM width (InternVL3-8B: 3584)
    context_dim: int = 4096  # DiT context width (FLUX.1: 4096, the width of its T5 tokens)
    pooled_dim: int = 768  # DiT pooled vector width (FLUX.1: 768, the width of its CLIP vector)
    attn_dim: int = 512  # width of the layer-axis attention inside each LAP
    num_heads: int = 8  # heads of that attention
    template_tokens: str = "text"  # chat-template tokens: "text" (through the text LAP) or "drop"
    mllm_model_type: str = "internvl"  # the MLLM family these weights are made for
    aggregation: str = "dual"  # "dual" (the DLA), "joint" (one LAP) or "last_layer" (the paper's ablations)

    def __post_init__(self):
        if self.template_tokens not in TEMPLATE_TOKEN_MODES:
            raise SqueezeInputError(f"template_tokens={self.template_tokens!r} is not one of {TEMPLATE_TOKEN_MODES}.")
        if self.aggregation not in AGGREGATIONS:
            raise SqueezeInputError(f"aggregation={self.aggregation!r} is not one of {AGGREGATIONS}.")
        for name in ("num_layers", "hidden_size", "context_dim", "pooled_dim", "attn_dim", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SqueezeInputError(f"DLAConfig.{name}={value!r} must be a positive integer.")
        if self.attn_dim % self.num_heads:
            raise SqueezeInputError(f"DLAConfig.attn_dim={self.attn_dim} must be divisible by num_heads={self.num_heads}.")

    @classmethod
    def for_mllm(cls, info: MLLMInfo, **overrides) -> "DLAConfig":
        return cls(num_layers=info.num_layers, hidden_size=info.hidden_size, mllm_model_type=info.model_type, **overrides)

    @classmethod
    def from_dict(cls, data: dict) -> "DLAConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SqueezeWeightsError(f"DLA config has unknown fields {unknown}; the file was written by a newer Squeeze.")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    def mllm_info(self) -> MLLMInfo:
        return MLLMInfo(self.mllm_model_type, self.num_layers, self.hidden_size)


@dataclass
class DLAOutput:
    context: torch.Tensor  # (B, T', context_dim)
    pooled: torch.Tensor  # (B, pooled_dim)
    attention_mask: torch.Tensor  # (B, T')
    layer_weights: torch.Tensor  # (B, T', L)
    token_types: torch.Tensor  # (B, T')

    def to(self, device) -> "DLAOutput":
        return DLAOutput(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def item(self, index: int) -> "DLAOutput":
        """One batch item with its padding removed (batch dimension kept): what ComfyUI conditioning holds."""
        length = int(self.attention_mask[index].sum())
        return DLAOutput(
            context=self.context[index : index + 1, :length],
            pooled=self.pooled[index : index + 1],
            attention_mask=self.attention_mask[index : index + 1, :length],
            layer_weights=self.layer_weights[index : index + 1, :length],
            token_types=self.token_types[index : index + 1, :length],
        )


def _compact(values: torch.Tensor, keep: torch.Tensor, length: int) -> torch.Tensor:
    """Move the kept positions of each row to the front: (B, T, ...) -> (B, length, ...), zeros after."""
    out = values.new_zeros((values.shape[0], length) + tuple(values.shape[2:]))
    rows, cols = keep.nonzero(as_tuple=True)
    dest = keep.long().cumsum(dim=1)[rows, cols] - 1
    out[rows, dest] = values[rows, cols]
    return out


class DualLayerAggregator(nn.Module):
    def __init__(self, config: DLAConfig | None = None):
        super().__init__()
        self.config = config = config or DLAConfig()
        lap = dict(attn_dim=config.attn_dim, num_heads=config.num_heads, learned_weights=config.aggregation != "last_layer")
        if config.aggregation == "dual":
            self.text_lap = LayerwiseAttentionPooling(config.num_layers, config.hidden_size, config.context_dim, **lap)
            self.image_lap = LayerwiseAttentionPooling(config.num_layers, config.hidden_size, config.context_dim, **lap)
        else:
            self.joint_lap = LayerwiseAttentionPooling(config.num_layers, config.hidden_size, config.context_dim, **lap)
        self.pooled_proj = nn.Linear(config.hidden_size, config.pooled_dim)

    @property
    def laps(self) -> tuple[LayerwiseAttentionPooling, LayerwiseAttentionPooling]:
        """(the LAP text tokens go through, the one image tokens go through): one module twice unless "dual"."""
        if self.config.aggregation == "dual":
            return self.text_lap, self.image_lap
        return self.joint_lap, self.joint_lap

    @contextlib.contextmanager
    def restricted_to(self, layers):
        """Within the block, both LAPs mix only `layers` (e.g. range(0, 9)): their learned weights renormalised over
        that group. The paper's early / middle / late layer analysis, at inference, on one trained DLA."""
        allowed = torch.zeros(self.config.num_layers, dtype=torch.bool)
        layers = list(layers)
        if not layers or min(layers) < 0 or max(layers) >= self.config.num_layers:
            raise SqueezeInputError(f"layer group {layers} is not within the DLA's {self.config.num_layers} layers.")
        if self.config.aggregation == "last_layer":
            raise SqueezeInputError("a last-layer aggregator has no layer weights to restrict; layer groups need a "
                                    "'dual' or 'joint' DLA.")
        allowed[layers] = True
        for lap in self.laps:
            lap.allowed_layers = allowed
        try:
            yield self
        finally:
            for lap in self.laps:
                lap.allowed_layers = None

    def check_mllm(self, info: MLLMInfo, weights_name: str = "the DLA") -> None:
        expected = self.config.mllm_info()
        if not expected.matches(info):
            raise SqueezeWeightsError(
                f"{weights_name} was made for an MLLM with {expected.model_type}, {expected.num_layers} layers x "
                f"{expected.hidden_size}, but the loaded MLLM is {info.describe()}. Load the MLLM these weights were "
                "trained with, or DLA weights trained for this MLLM."
            )

    def forward(self, mllm: MLLMOutput) -> DLAOutput:
        hidden = mllm.hidden_states  # (L, B, T, H)
        num_layers, _, _, hidden_size = hidden.shape
        if (num_layers, hidden_size) != (self.config.num_layers, self.config.hidden_size):
            raise SqueezeWeightsError(
                f"the DLA expects {self.config.num_layers} MLLM layers x {self.config.hidden_size}, but got hidden "
                f"states with {num_layers} layers x {hidden_size}: the DLA weights belong to another MLLM."
            )
        dtype = self.pooled_proj.weight.dtype
        real = mllm.attention_mask.bool()
        types = mllm.token_types
        text_types = [TokenType.TEXT] + ([TokenType.TEMPLATE] if self.config.template_tokens == "text" else [])
        text_sel = real & torch.isin(types, torch.tensor([int(t) for t in text_types], device=types.device))
        image_sel = real & (types == TokenType.IMAGE)
        keep = text_sel | image_sel
        lengths = keep.sum(dim=1)
        if int(lengths.min()) == 0:
            empty = int((lengths == 0).nonzero()[0, 0])
            raise SqueezeInputError(
                f"prompt {empty} leaves no tokens to condition on (an empty prompt, no references and "
                "template_tokens='drop'); give it a prompt or a reference image."
            )

        def run(lap: LayerwiseAttentionPooling, select: torch.Tensor):
            tokens = hidden[:, select].permute(1, 0, 2).to(dtype)  # (N, L, H)
            return lap(tokens)

        text_lap, image_lap = self.laps
        text_out, text_mixed, text_weights = run(text_lap, text_sel)
        image_out, _, image_weights = run(image_lap, image_sel)

        batch, seq = keep.shape
        # under autocast a LAP that ran is in the autocast dtype, one with no tokens in the input dtype: use one
        out_dtype = torch.promote_types(text_out.dtype, image_out.dtype)
        context = text_out.new_zeros(batch, seq, self.config.context_dim, dtype=out_dtype)
        weights = text_out.new_zeros(batch, seq, num_layers, dtype=torch.promote_types(text_weights.dtype, image_weights.dtype))
        context[text_sel], weights[text_sel] = text_out.to(out_dtype), text_weights.to(weights.dtype)
        context[image_sel], weights[image_sel] = image_out.to(out_dtype), image_weights.to(weights.dtype)

        # pooled: mean of the text LAP's mixed features per item (scatter-add keeps it free of padding)
        text_rows = text_sel.nonzero(as_tuple=True)[0]
        pooled_sum = text_mixed.new_zeros(batch, hidden_size).index_add_(0, text_rows, text_mixed)
        counts = text_sel.sum(dim=1, keepdim=True).clamp(min=1).to(pooled_sum.dtype)
        pooled = self.pooled_proj(pooled_sum / counts)

        length = int(lengths.max())
        positions = torch.arange(length, device=keep.device)
        return DLAOutput(
            context=_compact(context, keep, length),
            pooled=pooled,
            attention_mask=(positions[None, :] < lengths[:, None]).long(),
            layer_weights=_compact(weights, keep, length),
            token_types=_compact(types, keep, length),
        )
