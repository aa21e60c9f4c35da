"""FLUX RoPE position ids for the target latent and the reference latents, as ComfyUI's FLUX computes them.

The headless pipeline must give the transformer the very same ids as the ComfyUI graph, or the two disagree.
Ids are (index, row, column) per 2x2 latent patch. The target canvas is at index 0, rows 0..H-1, columns 0..W-1
(H, W in patches). With the UNO-style method ("uxo", ComfyUI's `reference_latents_method`), every reference also has
index 0 and is placed diagonally past the canvas: the first starts at row H, column W, and each next one starts where
the previous ones end (offsets accumulate in latent pixels, rounded to patches as ComfyUI rounds them).
"""

from __future__ import annotations

import torch

PATCH = 2  # FLUX packs 2x2 latent pixels into one token


def patch_grid_ids(height: int, width: int, index: float = 0.0, row_offset: int = 0, column_offset: int = 0) -> torch.Tensor:
    """(h * w, 3) ids of a latent of `height` x `width` latent pixels (padded up to whole patches)."""
    rows, columns = (height + PATCH // 2) // PATCH, (width + PATCH // 2) // PATCH
    row_offset = (row_offset + PATCH // 2) // PATCH
    column_offset = (column_offset + PATCH // 2) // PATCH
    ids = torch.zeros(rows, columns, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(rows, dtype=torch.float32)[:, None] + row_offset
    ids[..., 2] = torch.arange(columns, dtype=torch.float32)[None, :] + column_offset
    return ids.reshape(-1, 3)


def uxo_position_ids(target_hw: tuple[int, int], reference_hws: list[tuple[int, int]]) -> torch.Tensor:
    """Ids of the target latent followed by every reference latent (sizes in latent pixels), UNO-style placement."""
    height, width = target_hw
    rows, columns = (height + PATCH // 2) // PATCH, (width + PATCH // 2) // PATCH
    parts = [patch_grid_ids(height, width)]
    placed_h = placed_w = 0
    for ref_h, ref_w in reference_hws:
        parts.append(patch_grid_ids(ref_h, ref_w, 0.0, rows * PATCH + placed_h, columns * PATCH + placed_w))
        placed_h += ref_h
        placed_w += ref_w
    return torch.cat(parts)
