"""Layerwise Attention Pooling (LAP), section 3.2 of the paper.

For every token separately, LAP treats the MLLM's layers as a short sequence: a light multi-head self-attention over
that layer axis (with learned layer embeddings) followed by a fully connected scorer gives one weight per layer; the
token's output is the weighted mix of its layers, projected to the DiT's context width.

    x (N, L, H) --layer norm--> x̂ --down+layer emb--> z (N, L, d) --self-attn over L--> z' --fc--> softmax --> w (N, L)
    out = proj( sum_l w[:, l] * x̂[:, l] )   (N, out_dim)

Design choices (the paper gives the shape of the module, not these details):
- Each layer's hidden state is normalised (LayerNorm without affine) before scoring and mixing. Decoder layers
  differ in scale by orders of magnitude (residual streams grow with depth, and HF applies the final norm to the last
  layer only), so an un-normalised mix would simply be the loudest layer.
- The attention runs in a reduced width `attn_dim` (a shared down projection), which keeps LAP far below 1% of a
  FLUX step even on InternVL3-8B's 3584-wide layers; the mix itself uses the full-width normalised features.
- The scorer starts near zero, so an untrained LAP is (almost exactly) the uniform average of all normalised
  layers rather than noise, and every parameter still receives a gradient from the first step.
- `learned_weights=False` is the paper's "last layer only" baseline in the same module: no scorer, every token takes
  its normalised last layer, projected the same way.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerwiseAttentionPooling(nn.Module):
    def __init__(self, num_layers: int, hidden_size: int, out_dim: int, attn_dim: int = 512, num_heads: int = 8,
                 learned_weights: bool = True):
        super().__init__()
        self.num_layers = num_layers
        self.learned_weights = learned_weights
        self.layer_norm = nn.LayerNorm(hidden_size, elementwise_affine=False)
        if learned_weights:
            self.down = nn.Linear(hidden_size, attn_dim)
            self.layer_embedding = nn.Parameter(torch.randn(num_layers, attn_dim) * 0.02)
            self.attn_norm = nn.LayerNorm(attn_dim)
            self.attn = nn.MultiheadAttention(attn_dim, num_heads, batch_first=True)
            self.score = nn.Linear(attn_dim, 1)
            nn.init.normal_(self.score.weight, std=1e-3)
            nn.init.zeros_(self.score.bias)
        self.proj = nn.Linear(hidden_size, out_dim)
        self.allowed_layers: torch.Tensor | None = None  # (L,) bool; None = all (see DualLayerAggregator.restricted_to)

    def layer_weights(self, normed: torch.Tensor) -> torch.Tensor:
        """(N, L, H) normalised layers -> (N, L) per-token layer weights that sum to 1."""
        if not self.learned_weights:
            return torch.nn.functional.one_hot(torch.full(normed.shape[:1], self.num_layers - 1, device=normed.device),
                                               self.num_layers).to(normed.dtype)
        z = self.down(normed) + self.layer_embedding  # (N, L, d)
        h = self.attn_norm(z)
        z = z + self.attn(h, h, h, need_weights=False)[0]
        scores = self.score(z).squeeze(-1)
        if self.allowed_layers is not None:  # the layer-group analysis: renormalise over the allowed layers only
            scores = scores.masked_fill(~self.allowed_layers.to(scores.device), float("-inf"))
        return scores.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, L, H) one row of layers per token -> (out (N, out_dim), mixed (N, H), weights (N, L))."""
        if x.shape[0] == 0:  # no tokens of this kind in the batch
            return x.new_zeros(0, self.proj.out_features), x.new_zeros(0, x.shape[-1]), x.new_zeros(0, x.shape[1])
        normed = self.layer_norm(x)
        weights = self.layer_weights(normed)
        mixed = torch.einsum("nl,nlh->nh", weights, normed)
        return self.proj(mixed), mixed, weights
