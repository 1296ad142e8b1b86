"""Launch of the aligned-order copy of the hidden states (see ``gather_rows_kernel``)."""

from __future__ import annotations

import torch
import triton

from moekit.experts._triton_impl.gather_rows_kernel import gather_rows_kernel
from moekit.experts._triton_impl.programmatic_launch import launch_options
from moekit.experts._triton_impl.tile_source import TileSource

ROWS_PER_PROGRAM = 16
COLUMNS_PER_PROGRAM = 512


def gather_sorted_rows(hidden_states: torch.Tensor, tiles: TileSource, top_k: int,
                       out: torch.Tensor | None = None, wait_prior: bool = False,
                       launch_next: bool = False) -> torch.Tensor:  # fmt: skip
    """``out [num_sorted, K]`` (``num_sorted = tiles.sorted_token_ids.shape[0]``; allocated when
    None): row ``p`` is the token row of sorted slot ``p``, zeros at padding positions, left
    alone past the last aligned block. ``hidden_states [M, K]``; ``tiles`` from the alignment
    pass (not tiles from ``topk_ids``).
    ``wait_prior`` (only where ``moekit.align.programmatic_launch_supported``, which the caller
    checks) launches it with programmatic dependent launch: its programs wait for the previous
    kernel first; ``launch_next`` then lets the next kernel start early (it must wait the same way)."""
    if tiles.sorted_token_ids is None or tiles.num_tokens_post_padded is None:
        raise ValueError("tiles: the aligned order needs moe_align_block_size's output")
    num_tokens, k = hidden_states.shape
    num_sorted = tiles.sorted_token_ids.shape[0]
    if out is None:
        out = hidden_states.new_empty(num_sorted, k)
    elif out.shape != (num_sorted, k) or out.stride(1) != 1 or out.dtype != hidden_states.dtype:
        raise ValueError(f"out: expected a row-major {hidden_states.dtype} [{num_sorted}, {k}], "
                         f"got {out.dtype} {tuple(out.shape)} with strides {out.stride()}")  # fmt: skip
    grid = (triton.cdiv(num_sorted, ROWS_PER_PROGRAM), triton.cdiv(k, COLUMNS_PER_PROGRAM))
    gather_rows_kernel[grid](
        hidden_states, out, tiles.sorted_token_ids, tiles.num_tokens_post_padded,
        num_tokens * top_k, num_sorted, k, hidden_states.stride(0), hidden_states.stride(1),
        out.stride(0), TOP_K=top_k, BLOCK_R=ROWS_PER_PROGRAM, BLOCK_K=COLUMNS_PER_PROGRAM,
        WAIT_PRIOR=wait_prior, LAUNCH_NEXT=wait_prior and launch_next, **launch_options(wait_prior),
    )  # fmt: skip
    return out
