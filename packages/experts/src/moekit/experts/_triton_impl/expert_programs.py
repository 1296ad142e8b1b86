"""Launch of both GEMMs as one program per local expert (see ``expert_programs_kernel``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import triton

from moekit.experts._triton_impl.activation_epilogue import ACTIVATION_CODES
from moekit.experts._triton_impl.device import sm_count
from moekit.experts._triton_impl.expert_programs_kernel import expert_programs_kernel
from moekit.experts._triton_impl.gate_up_gemm import ONE_CHUNK_STEP_WARPS
from moekit.experts._triton_impl.programmatic_launch import launch_options
from moekit.experts._triton_impl.weight_descriptor import chunked_descriptor, weight_descriptor
from moekit.experts.activation import SWIGLUOAI_ALPHA, SWIGLUOAI_LIMIT, MoEActivation
from moekit.experts.weight_chunks import chunk_width, is_chunked

# The path's one tile, the best of probe_expert_programs.py on the H100 around Qwen3-30B TP2 at
# 16 tokens (benchmarks/results/experts_expert_programs_h100.json, NOTES lever 42): 64
# activation columns (64 gate and 64 up rows of W13) and 128 output columns per block, K steps
# of 128, four stages, four warps. Three stages, five, eight warps, 128 activation columns or
# steps of 64 were 0.4-5% slower there. An expert's rows past one block take another block.
BLOCK_N1 = 64
BLOCK_K1 = 128
BLOCK_N2 = 128
BLOCK_K2 = 128
STAGES = 4
NUM_WARPS = 4
SCAN_MAX = 2048  # topk_ids entries each program scans at a time
# Programs after the experts' that share the blocks past each expert's first: such a block
# streams its expert's weights on one SM, at up to about 50 GB/s, about twice what each of the
# experts' programs gets while they all share HBM, so a few workers on the SMs the experts leave
# free take about two blocks each in the experts' time. When each expert's program ran its own
# further blocks, after its first, a busy expert's program ran alone at the end; workers took 4%
# off Qwen3-30B TP2 at 256 tokens with skewed routing (32-row blocks, 315 -> 303 µs), taller
# blocks (below) the rest. A worker on every SM instead lost up to 2% at 64 tokens.
MIN_WORKERS = 4
# Rows per block: 16 while the slots average at most 4 per local expert, 64 beyond (up to the
# rule's 16). A block then holds four times an expert's mean slots, so that routing which favours
# some experts seldom spills one into a second block, which streams that expert's weights once
# more on one SM (see MIN_WORKERS). With 32-row blocks above 4 slots (and workers), routing whose
# busiest expert had 2.75 times the mean made Qwen3-30B TP2 at 256 tokens 31% slower than the
# aligned path (293 µs, 1.46x the floor); 64-row blocks took 27% off that (214 µs), and cost
# 0.1-0.7% on uniform routing at 96-256 tokens (bench_call_variants.py --groups programs_blocks
# --skew 0.25, NOTES lever 43). 64-row blocks pipeline three stages over eight warps instead of
# four over four: on the H100 that was 0.4-0.7% faster on Qwen3-30B and its TP2 slice at 512
# tokens (``--groups programs_tiles``); four stages over eight warps tied three, two lost 9-28%.
BLOCK_M_BY_MEAN_ROWS = ((4, 16),)
BLOCK_M_MAX = 64
TALL_BLOCK_M = 64
TALL_STAGES = 3
TALL_NUM_WARPS = 8
# Weights in K chunks: a K step of BLOCK_K1 (BLOCK_K2) columns is one product per chunk, except
# that programs of ONE_CHUNK_STEP_WARPS warps or more (64-row blocks) step one chunk at a time
# over as many more stages, so that as many bytes stay in flight. On the H100, Qwen3-30B TP2
# lost 2.4% at 16 tokens (16-row blocks) and 50% at 256 (64-row blocks, eight warps) with two
# products a step; with one chunk a step over twice the stages, 4.5% and 2.6%; its weights as
# stored stay the faster there (benchmarks/results/experts_chunked_path_h100.json). Chunks of
# 128 columns make each step of 128 one product: on the H200, Qwen3-30B at 16 tokens lost 1.1%
# instead of 16% (benchmarks/results/experts_chunked_widths_qwen_h200.json).


def chunked_steps(stages: int, num_warps: int, width1: int,
                  width2: int) -> tuple[int, int, int]:  # fmt: skip
    """``(block_k1, block_k2, stages)`` of a call on W13 and W2 in K chunks of ``width1`` and
    ``width2`` columns whose weights as stored would run ``stages`` stages of ``BLOCK_K1`` and
    ``BLOCK_K2`` over ``num_warps`` warps. With chunks of different widths the stages follow
    the wider, so that shared memory holds them."""
    if num_warps < ONE_CHUNK_STEP_WARPS:
        return max(BLOCK_K1, width1), max(BLOCK_K2, width2), stages
    return width1, width2, max(1, stages * max(BLOCK_K1, BLOCK_K2) // max(width1, width2))


def block_m(num_slots: int, num_local_experts: int) -> int:
    """Rows per block of a call with ``num_slots`` slots over ``num_local_experts`` experts."""
    for mean_rows, rows in BLOCK_M_BY_MEAN_ROWS:
        if num_slots <= mean_rows * num_local_experts:
            return rows
    return BLOCK_M_MAX


def num_workers(num_local_experts: int, device: torch.device) -> int:
    """Worker programs of a call (see ``MIN_WORKERS``): the SMs the experts' programs leave free,
    at least ``MIN_WORKERS``."""
    free = sm_count(device) - num_local_experts if device.type == "cuda" else 0
    return max(MIN_WORKERS, free)


def stages_and_warps(rows_per_block: int) -> tuple[int, int]:
    """The software pipeline's stages and the warps of a program with ``rows_per_block`` rows."""
    if rows_per_block >= TALL_BLOCK_M:
        return TALL_STAGES, TALL_NUM_WARPS
    return STAGES, NUM_WARPS


class ExpertWeights(NamedTuple):
    """TMA descriptors over ``W13`` and ``W2`` with the path's blocks; where in ``W13``'s view
    an expert's rows and an up block sit; with weights in K chunks, how many view rows on the
    next chunk of each lies; ``W2``'s view rows per expert; the K columns of a chunk of each
    (0: no chunks; see ``expert_programs_kernel``)."""

    w13: Any
    w2: Any
    rows_per_expert: int
    up_row: int
    up_col: int
    chunk_rows1: int
    w2_rows_per_expert: int
    chunk_rows2: int
    chunk1: int = 0
    chunk2: int = 0


def expert_weights(w13: torch.Tensor, w2: torch.Tensor,
                   activation: MoEActivation) -> ExpertWeights | None:  # fmt: skip
    """The descriptors of ``w13 [E, N, K]`` and ``w2 [E, K, N_OUT]``, or of both in K chunks
    (``chunk_weights``; see ``chunked_steps``), or None where the layout, the device or the
    Triton release gives none (the path then does not serve the call)."""
    interleaved = activation is MoEActivation.SWIGLUOAI
    if is_chunked(w13):
        return _chunked_expert_weights(w13, w2, interleaved)
    w13_desc = weight_descriptor(w13, BLOCK_N1, BLOCK_K1, row_pairs=interleaved)
    w2_desc = weight_descriptor(w2, BLOCK_N2, BLOCK_K2)
    if w13_desc is None or w2_desc is None:
        return None
    n, k = w13.shape[1], w13.shape[2]
    rows, up_row, up_col = (n // 2, 0, k) if interleaved else (n, n // 2, 0)
    return ExpertWeights(w13_desc, w2_desc, rows, up_row, up_col, 0, w2.shape[1], 0)


def _chunked_expert_weights(w13: torch.Tensor, w2: torch.Tensor,
                            interleaved: bool) -> ExpertWeights | None:  # fmt: skip
    width1, width2 = chunk_width(w13), chunk_width(w2)
    w13_desc = chunked_descriptor(w13, BLOCK_N1, width1, row_pairs=interleaved)
    w2_desc = chunked_descriptor(w2, BLOCK_N2, width2)
    if w13_desc is None or w2_desc is None:
        return None
    n, k = w13.shape[2], w2.shape[2]
    view_rows = n // 2 if interleaved else n
    up_row, up_col = (0, width1) if interleaved else (n // 2, 0)
    return ExpertWeights(w13_desc, w2_desc, w13.shape[1] * view_rows, up_row, up_col, view_rows,
                         w2.shape[1] * k, k, width1, width2)  # fmt: skip


def invoke_expert_programs(
    a: torch.Tensor,
    weights: ExpertWeights,
    activated: torch.Tensor,
    rows: torch.Tensor,
    w13_bias: torch.Tensor | None,
    w2_bias: torch.Tensor | None,
    topk_weights: torch.Tensor | None,
    topk_ids: torch.Tensor,
    expert_map: torch.Tensor | None,
    num_global_experts: int,
    num_local_experts: int,
    activation: MoEActivation,
    activated_eviction: str = "",
    rows_eviction: str = "",
    wait_prior: bool = False,
    launch_next: bool = False,
) -> None:
    """``rows[s] = (act(a[s // top_k] @ w13[e].T + w13_bias[e]) @ w2[e].T + w2_bias[e]) *
    topk_weights[s]`` for every slot ``s`` whose expert ``e`` is local; other rows are not
    written. ``activated[s]`` gets the activated row on the way.

    ``a [M, K]``; ``weights`` from ``expert_weights``; ``activated [M * top_k, N_OUT]`` and
    ``rows [M * top_k, K]`` with unit column stride; biases ``[E, N]`` and ``[E, K]`` or None;
    ``topk_weights`` flat ``[M * top_k]`` float32 or None (no weighting); ``topk_ids [M, top_k]``
    global ids, mapped through ``expert_map`` when given (ids below 0 or past
    ``num_global_experts`` are nobody's). The grid is ``num_local_experts`` programs.
    ``activated_eviction`` and ``rows_eviction`` are the L2 eviction policies of the two stores
    (see ``row_cache``). ``wait_prior`` and ``launch_next`` as in ``invoke_gate_up_gemm``.
    """
    num_tokens, top_k = topk_ids.shape
    num_slots = num_tokens * top_k
    n_out, k = activated.shape[1], a.shape[1]
    gated = activation.is_gated
    interleaved = activation is MoEActivation.SWIGLUOAI
    up_offset = (1 if interleaved else n_out) if gated else 0
    rows_per_block = block_m(num_slots, num_local_experts)
    stages, num_warps = stages_and_warps(rows_per_block)
    block_k1, block_k2 = BLOCK_K1, BLOCK_K2
    if weights.chunk1:
        block_k1, block_k2, stages = chunked_steps(stages, num_warps, weights.chunk1,
                                                   weights.chunk2)  # fmt: skip
    workers = num_workers(num_local_experts, a.device)
    programs = num_local_experts + workers
    scratch = torch.empty(programs * rows_per_block, dtype=torch.int32, device=a.device)
    expert_programs_kernel[(programs,)](
        a, weights.w13, weights.w2, activated, rows,
        w13_bias if w13_bias is not None else rows, w2_bias if w2_bias is not None else rows,
        topk_weights if topk_weights is not None else rows, topk_ids.reshape(-1),
        expert_map if expert_map is not None else topk_ids, scratch, num_global_experts,
        num_local_experts, workers, num_slots, k, n_out, up_offset, a.stride(0),
        activated.stride(0), rows.stride(0),
        w13_bias.stride(0) if w13_bias is not None else 0,
        w2_bias.stride(0) if w2_bias is not None else 0,
        weights.rows_per_expert, weights.up_row, weights.up_col, weights.chunk_rows1,
        weights.w2_rows_per_expert, weights.chunk_rows2,
        TOP_K=top_k, HAS_MAP=expert_map is not None, GATED=gated,
        GATE_ROW_STEP=2 if interleaved else 1, ACTIVATION=ACTIVATION_CODES[activation],
        SWIGLU_ALPHA=SWIGLUOAI_ALPHA, SWIGLU_LIMIT=SWIGLUOAI_LIMIT,
        HAS_BIAS1=w13_bias is not None, HAS_BIAS2=w2_bias is not None,
        MUL_ROUTED_WEIGHT=topk_weights is not None, IEEE_FP32=a.dtype == torch.float32,
        SCAN=max(16, min(SCAN_MAX, triton.next_power_of_2(num_slots))),
        NUM_BINS=max(32, triton.next_power_of_2(num_local_experts + 1)), BLOCK_M=rows_per_block,
        BLOCK_N1=BLOCK_N1, BLOCK_K1=block_k1, BLOCK_N2=BLOCK_N2, BLOCK_K2=block_k2,
        CHUNK1=weights.chunk1, CHUNK2=weights.chunk2,
        STAGES=stages, ACT_EVICTION=activated_eviction, ROWS_EVICTION=rows_eviction,
        WAIT_PRIOR=wait_prior, LAUNCH_NEXT=wait_prior and launch_next,
        num_warps=num_warps, **launch_options(wait_prior),
    )  # fmt: skip
