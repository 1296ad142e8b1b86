"""Launch of GEMM1 with the activation fused (see ``gate_up_gemm_kernel``)."""

from __future__ import annotations

import torch
import triton

from moekit.experts._triton_impl.activation_epilogue import ACTIVATION_CODES
from moekit.experts._triton_impl.configs import GemmConfig
from moekit.experts._triton_impl.gate_up_gemm_kernel import gate_up_gemm_kernel
from moekit.experts._triton_impl.programmatic_launch import launch_options
from moekit.experts._triton_impl.row_cache import activated_rows_eviction
from moekit.experts._triton_impl.tile_source import TileSource
from moekit.experts._triton_impl.topk_sum_epilogue import counter_block
from moekit.experts._triton_impl.weight_descriptor import (
    chunk_product,
    chunked_descriptor,
    rows_descriptor,
    weight_descriptor,
)
from moekit.experts.activation import SWIGLUOAI_ALPHA, SWIGLUOAI_LIMIT, MoEActivation
from moekit.experts.weight_chunks import chunk_width, experts_and_rows, weight_strides


def gate_up_block_n(config: GemmConfig, gated: bool) -> int:
    """Activation columns per tile: ``BLOCK_N1`` when the table sets it, else half of
    ``BLOCK_N`` when gated (a tile then spans ``BLOCK_N`` rows of W13, as GEMM2's tiles span
    ``BLOCK_N`` columns) and ``BLOCK_N`` otherwise."""
    if config.BLOCK_N1:
        return config.BLOCK_N1
    return max(16, config.BLOCK_N // 2) if gated else config.BLOCK_N


# GEMM1 reading W13's chunks through TMA with at least this many warps steps K one chunk at a
# time: on the H100, Mixtral's eight-warp 256-token entry (K steps of 128) took 160 registers
# instead of 91 with two products a step and ran 66% slower; in steps of one chunk it ran 1.5%
# faster than on the weights as stored (benchmarks/results/experts_chunked_h100.json).
ONE_CHUNK_STEP_WARPS = 8


def chunk_step(config: GemmConfig, width: int) -> int:
    """GEMM1's K step on W13's chunks of ``width`` columns: at most one chunk for entries of
    ``ONE_CHUNK_STEP_WARPS`` or more warps that read through TMA, else the entry's ``BLOCK_K``."""
    if config.B_TMA and config.num_warps >= ONE_CHUNK_STEP_WARPS:
        return min(config.BLOCK_K, width)
    return config.BLOCK_K


def invoke_gate_up_gemm(
    a: torch.Tensor,
    w13: torch.Tensor,
    out: torch.Tensor,
    bias: torch.Tensor | None,
    tiles: TileSource,
    top_k: int,
    activation: MoEActivation,
    config: GemmConfig,
    a_rows_sorted: bool = False,
    out_rows_sorted: bool = False,
    num_slots: int | None = None,
    counters: torch.Tensor | None = None,
    wait_prior: bool = False,
    launch_next: bool = False,
) -> None:
    """``out[slot] = act(a[slot // top_k] @ w13[e].T + bias[e])`` for every placed slot of every
    expert ``e`` (zeros for blocks of expert ``-1``).

    ``a [rows, K]``, ``w13 [E, N, K]`` or its K chunks ``[E, ceil(K / W), N, W]``
    (``chunk_weights``), ``out [num_slots, N_OUT]`` with ``N_OUT = N / 2`` for gated activations
    (else ``N``), ``bias [E, N]`` or None. ``config.B_TMA`` reads ``w13`` through a descriptor
    where ``weight_descriptor`` gives one (for chunks: ``chunked_descriptor``, with boxes of
    ``chunk_product`` columns of the K step, ``chunk_step``). ``a_rows_sorted`` (``a`` holds
    one row per sorted position, read through a descriptor where the layout allows) and
    ``out_rows_sorted`` (``out`` gets one row per sorted position) replace the slot rows with
    ``tiles.sorted_token_ids`` order, padding included; ``num_slots`` (the flat slot count,
    default ``out``'s rows) must then be given. ``counters`` (int32, GEMM2's top-k sum counters,
    see ``topk_sum_epilogue``) are zeroed on the way.
    ``wait_prior`` (only where ``moekit.align.programmatic_launch_supported``, which the caller
    checks) launches it with programmatic dependent launch: its programs wait for the previous
    kernel first; ``launch_next`` then lets the next kernel start early (it must wait the same way).
    """
    n_out = out.shape[1]
    num_slots = out.shape[0] if num_slots is None else num_slots
    width = chunk_width(w13)
    chunked = width > 0
    n, k = experts_and_rows(w13)[1], a.shape[1]
    gated = activation.is_gated
    interleaved = activation is MoEActivation.SWIGLUOAI
    block_n = gate_up_block_n(config, gated)
    block_k = chunk_step(config, width) if chunked else config.BLOCK_K
    tail_m = 0 if tiles.slots_from_ids else config.TAIL_M  # one slot per tile: nothing to fold
    grid = (tiles.num_m_tiles(config.BLOCK_M) * triton.cdiv(n_out, block_n),)
    *tile_args, num_sorted = tiles.kernel_args(out)
    num_counters = counters.numel() if counters is not None else 0
    b_desc = None
    dot_k = block_k  # one product's K columns
    product_k = chunk_product(block_k, width)
    if config.B_TMA and product_k:
        b_desc = chunked_descriptor(w13, block_n, product_k, row_pairs=interleaved)
        dot_k = product_k if b_desc is not None else dot_k
    elif config.B_TMA and not chunked:
        b_desc = weight_descriptor(w13, block_n, block_k, row_pairs=interleaved)
    a_desc = rows_descriptor(a, config.BLOCK_M, dot_k) if a_rows_sorted else None
    # the descriptor's view: rows per expert, where an up block sits from its gate block, and
    # the rows from one K chunk to the next
    view_rows = n // 2 if interleaved else n
    desc_up_row, desc_up_col = (0, width if chunked else k) if interleaved else (n // 2, 0)
    desc_rows, desc_chunk_rows = (
        (w13.shape[1] * view_rows, view_rows) if chunked else (view_rows, 0)
    )
    gate_up_gemm_kernel[grid](
        a, a_desc if a_desc is not None else a, w13, b_desc if b_desc is not None else w13, out,
        bias if bias is not None else out,
        *tile_args, counters if counters is not None else out, num_counters,
        n_out, k, num_slots, num_sorted, (1 if interleaved else n // 2) if gated else 0,
        a.stride(0), a.stride(1), *weight_strides(w13), out.stride(0), out.stride(1),
        bias.stride(0) if bias is not None else 0, bias.stride(1) if bias is not None else 0,
        desc_rows, desc_up_row, desc_up_col, desc_chunk_rows,
        SLOTS_FROM_IDS=tiles.slots_from_ids, HAS_MAP=tiles.expert_map is not None,
        ZERO_COUNTERS=counters is not None, COUNTER_BLOCK=counter_block(num_counters, grid[0]),
        TOP_K=top_k, GATED=gated, GATE_ROW_STEP=2 if interleaved else 1,
        ACTIVATION=ACTIVATION_CODES[activation], SWIGLU_ALPHA=SWIGLUOAI_ALPHA,
        SWIGLU_LIMIT=SWIGLUOAI_LIMIT, HAS_BIAS=bias is not None,
        IEEE_FP32=a.dtype == torch.float32, B_TMA=b_desc is not None,
        B_CHUNK=width, A_ROWS_SORTED=a_rows_sorted, A_TMA=a_desc is not None,
        C_ROWS_SORTED=out_rows_sorted,
        BLOCK_M=config.BLOCK_M, BLOCK_N=block_n, BLOCK_K=block_k, DOT_K=dot_k,
        GROUP_M=config.GROUP_M, EXPERT_GROUPS=config.EXPERT_GROUPS and not tiles.slots_from_ids,
        TAIL_M=tail_m, TAIL_SWAP=config.TAIL_SWAP and tail_m > 0,
        C_EVICTION=activated_rows_eviction(config.ROWS_DEFAULT_POLICY),
        WAIT_PRIOR=wait_prior, LAUNCH_NEXT=wait_prior and launch_next,
        num_warps=config.num_warps, num_stages=config.num_stages, **launch_options(wait_prior),
    )  # fmt: skip
