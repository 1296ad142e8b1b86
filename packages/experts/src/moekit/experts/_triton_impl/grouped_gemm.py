"""Launch of the grouped GEMM (see ``grouped_gemm_kernel``)."""

from __future__ import annotations

import torch
import triton

from moekit.experts._triton_impl.configs import GemmConfig
from moekit.experts._triton_impl.grouped_gemm_kernel import grouped_gemm_kernel
from moekit.experts._triton_impl.programmatic_launch import launch_options
from moekit.experts._triton_impl.tile_source import TileSource
from moekit.experts._triton_impl.weight_descriptor import (
    chunk_product,
    chunked_descriptor,
    rows_descriptor,
    weight_descriptor,
)
from moekit.experts.weight_chunks import chunk_width, weight_strides


def invoke_grouped_gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    bias: torch.Tensor | None,
    topk_weights: torch.Tensor | None,
    tiles: TileSource,
    top_k: int,
    config: GemmConfig,
    a_rows_sorted: bool = False,
    summed: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    wait_prior: bool = False,
    launch_next: bool = False,
    c_eviction: str = "",
) -> None:
    """``c[slot] = (a[slot // top_k] @ b[e].T + bias[e]) * topk_weights[slot]`` for every placed
    slot of every expert ``e`` (zeros for blocks of expert ``-1``).

    ``a [rows, K]``, ``b [E, N, K]`` or its K chunks ``[E, ceil(K / W), N, W]``
    (``chunk_weights``), ``c [num_slots, N]``, ``bias [E, N]`` or None, ``topk_weights`` flat
    ``[num_slots]`` or None (no weighting). ``config.B_TMA`` reads ``b`` through a descriptor
    where ``weight_descriptor`` gives one (for chunks: ``chunked_descriptor``, with boxes of
    ``chunk_product`` columns). With ``a_rows_sorted`` ``a``
    holds one row per sorted position (``tiles.sorted_token_ids`` order, padding included), so
    each tile reads one block of rows, through a descriptor where the layout allows.

    ``summed = (out [num_tokens, N], counters, sum_top_k)`` (tiles from ``topk_ids``
    only) also writes ``out[t]`` = the float32 sum of token ``t``'s local slot
    rows of ``c`` in slot order, cast, zeros for a token with none (see
    ``topk_sum_epilogue``); ``counters`` (int32, ``num_tokens * cdiv(N, BLOCK_N)``, see
    ``sum_counters``) must be zero, as GEMM1 leaves them.

    ``wait_prior`` (only where ``moekit.align.programmatic_launch_supported``, which the caller
    checks) launches it with programmatic dependent launch: its programs wait for the previous
    kernel first; ``launch_next`` then lets the next kernel start early (it must wait the same way).
    ``c_eviction`` is the L2 eviction policy of the stores to ``c`` (see ``row_cache``).
    """
    num_slots, n = c.shape
    k = a.shape[1]
    num_m_tiles = tiles.num_m_tiles(config.BLOCK_M) + (summed is not None)
    grid = (num_m_tiles * triton.cdiv(n, config.BLOCK_N),)
    dummy = c  # never read when the matching flag is off
    tail_m = 0 if tiles.slots_from_ids else config.TAIL_M  # one slot per tile: nothing to fold
    out, counters, sum_top_k = summed if summed is not None else (dummy, dummy, 1)
    if summed is not None:
        if not tiles.slots_from_ids:
            raise ValueError("summed: the fused top-k sum needs tiles from topk_ids")
        if out.stride(1) != 1 or counters.numel() < out.shape[0] * triton.cdiv(n, config.BLOCK_N):
            raise ValueError("summed: out needs unit column stride and counters one per token "
                             "and n-tile")  # fmt: skip
    width = chunk_width(b)
    chunked = width > 0
    b_desc = None
    dot_k = config.BLOCK_K  # one product's K columns
    product_k = chunk_product(config.BLOCK_K, width)
    if config.B_TMA and product_k:
        b_desc = chunked_descriptor(b, config.BLOCK_N, product_k)
        dot_k = product_k if b_desc is not None else dot_k
    elif config.B_TMA and not chunked:
        b_desc = weight_descriptor(b, config.BLOCK_N, config.BLOCK_K)
    a_desc = rows_descriptor(a, config.BLOCK_M, dot_k) if a_rows_sorted else None
    # b_desc's view: rows from one expert to the next and from one chunk to the next
    b_expert_rows, b_chunk_rows = (b.shape[1] * n, n) if chunked else (n, 0)
    *tile_args, num_sorted = tiles.kernel_args(dummy)
    grouped_gemm_kernel[grid](
        a, a_desc if a_desc is not None else a, b, b_desc if b_desc is not None else b, c,
        bias if bias is not None else dummy,
        topk_weights if topk_weights is not None else dummy, *tile_args,
        out, counters, out.shape[0] if summed is not None else 0,
        n, k, num_slots, num_sorted, b_expert_rows, b_chunk_rows,
        a.stride(0), a.stride(1), *weight_strides(b), c.stride(0), c.stride(1),
        bias.stride(0) if bias is not None else 0, out.stride(0),
        SLOTS_FROM_IDS=tiles.slots_from_ids, HAS_MAP=tiles.expert_map is not None,
        FUSED_SUM=summed is not None, SUM_TOP_K=sum_top_k,
        TOP_K=top_k, MUL_ROUTED_WEIGHT=topk_weights is not None, HAS_BIAS=bias is not None,
        IEEE_FP32=a.dtype == torch.float32, B_TMA=b_desc is not None,
        B_CHUNK=width,
        A_ROWS_SORTED=a_rows_sorted, A_TMA=a_desc is not None,
        BLOCK_M=config.BLOCK_M, BLOCK_N=config.BLOCK_N, BLOCK_K=config.BLOCK_K, DOT_K=dot_k,
        GROUP_M=config.GROUP_M, EXPERT_GROUPS=config.EXPERT_GROUPS and not tiles.slots_from_ids,
        TAIL_M=tail_m, TAIL_SWAP=config.TAIL_SWAP and tail_m > 0,
        C_EVICTION=c_eviction,
        WAIT_PRIOR=wait_prior, LAUNCH_NEXT=wait_prior and launch_next,
        num_warps=config.num_warps, num_stages=config.num_stages, **launch_options(wait_prior),
    )  # fmt: skip


def sum_counters(num_tokens: int, n: int, config: GemmConfig, device: torch.device) -> torch.Tensor:
    """Uninitialised int32 counters for ``invoke_grouped_gemm(summed=...)`` with GEMM2 tile
    ``config``: one per token and n-tile (GEMM1 zeroes them)."""
    return torch.empty(num_tokens * triton.cdiv(n, config.BLOCK_N), dtype=torch.int32,
                       device=device)  # fmt: skip
