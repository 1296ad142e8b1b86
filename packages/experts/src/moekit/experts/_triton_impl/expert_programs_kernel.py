"""Both GEMMs of the standard format in one kernel, one program per local expert (decode).

Program ``e`` finds its expert's first ``BLOCK_M`` slots by scanning ``topk_ids``
(``expert_slots``; no alignment pass), in slot order, through ``BLOCK_M`` int32 entries of its
own in ``scratch_ptr``. For that block it runs GEMM1 over all of its expert's activation columns,
with the activation, storing the activated rows ``[slots, N_OUT]`` as ``gate_up_gemm_kernel``
does; then, once every warp's rows are stored, GEMM2 over all of ``K``, storing the weighted
per-slot rows ``[slots, K]`` as ``grouped_gemm_kernel`` does. A few worker programs after the
experts' take the blocks of experts with more slots than one block, side by side: a busy
expert would otherwise stream its weights again after everybody else is done. The
products, their order and their rounding are those kernels' with the same ``BLOCK_K``, so the
rows are the same bit for bit. Each GEMM is one flat loop over (column block, K step), so that
the weight loads stay pipelined from one column block to the next.

Both weights come through TMA descriptors (``weight_descriptor``): ``w13_desc`` over ``W13``
seen as in ``gate_up_gemm_kernel`` (``DESC_ROWS`` rows per expert; an up block ``DESC_UP_ROW``
rows and ``DESC_UP_COL`` columns from its gate block), ``w2_desc`` over ``W2 [E, K, N_OUT]`` seen
as ``[E * K, N_OUT]`` (``W2_ROWS`` rows per expert). With ``CHUNK1`` and ``CHUNK2`` both are
stored in K chunks of that many columns (``chunked_descriptor``) and each K step, whole chunks,
is one product per chunk: chunk ``c`` of W13 lies ``c * DESC_CHUNK_ROWS`` view rows on and of W2
``c * W2_CHUNK_ROWS``, at column 0 (an up block at ``DESC_UP_COL``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.activation_epilogue import gated_activation, unary_activation
from moekit.experts._triton_impl.programmatic_launch import wait_for_prior_kernel
from moekit.experts._triton_impl.tiles import dot, local_expert_of


@triton.jit
def expert_slots(topk_ids_ptr, expert_map_ptr, num_global_experts, expert, num_slots,
                 m_block, scratch_ptr, HAS_MAP: tl.constexpr, SCAN: tl.constexpr,
                 BLOCK_M: tl.constexpr):  # fmt: skip
    """``(slots, slot_ok, count)``: the flat slots (int64) of ranks ``m_block * BLOCK_M`` to
    ``+ BLOCK_M`` among local expert ``expert``'s slots in slot order, which of them exist, and
    how many slots the expert has. ``topk_ids`` is read ``SCAN`` ids at a time; each slot of the
    block is stored at its rank in the program's ``BLOCK_M`` entries of ``scratch_ptr`` and read
    back, so the scan costs one cumulative sum per ``SCAN`` ids."""
    first = m_block * BLOCK_M
    count = 0
    tl.debug_barrier()  # every warp has read the previous block's entries
    for start in range(0, num_slots, SCAN):
        offs = start + tl.arange(0, SCAN)
        ids = tl.load(topk_ids_ptr + offs, mask=offs < num_slots, other=-1)
        mine = local_expert_of(ids, expert_map_ptr, num_global_experts, HAS_MAP) == expert
        rank = count + tl.cumsum(mine.to(tl.int32), 0) - 1
        in_block = mine & (rank >= first) & (rank < first + BLOCK_M)
        tl.store(scratch_ptr + rank - first, offs, mask=in_block)
        count += tl.sum(mine.to(tl.int32))
    tl.debug_barrier()  # every warp's entries are stored before any warp reads them
    row = tl.arange(0, BLOCK_M)
    slot_ok = first + row < count
    slots = tl.load(scratch_ptr + row, mask=slot_ok, other=0)
    return slots.to(tl.int64), slot_ok, count


@triton.jit
def overflow_blocks(topk_ids_ptr, expert_map_ptr, num_global_experts, num_slots,
                    num_local_experts, HAS_MAP: tl.constexpr, SCAN: tl.constexpr,
                    BLOCK_M: tl.constexpr, NUM_BINS: tl.constexpr):  # fmt: skip
    """``(extra, ends)``: each local expert's blocks past its first (``[NUM_BINS]`` int32, 0
    past the experts) and their inclusive running sum, from one histogram of ``topk_ids``.
    Overflow item ``t`` is block ``t - (ends[e] - extra[e]) + 1`` of the expert ``e`` whose
    range ``[ends[e] - extra[e], ends[e])`` holds it. Skipped slots fall in the last bin."""
    counts = tl.zeros([NUM_BINS], tl.int32)
    for start in range(0, num_slots, SCAN):
        offs = start + tl.arange(0, SCAN)
        ids = tl.load(topk_ids_ptr + offs, mask=offs < num_slots, other=-1)
        local = local_expert_of(ids, expert_map_ptr, num_global_experts, HAS_MAP)
        counts += tl.histogram(tl.where(local >= 0, local, NUM_BINS - 1).to(tl.int32), NUM_BINS)
    experts = tl.arange(0, NUM_BINS)
    extra = tl.where(experts < num_local_experts, tl.maximum(tl.cdiv(counts, BLOCK_M) - 1, 0), 0)
    return extra, tl.cumsum(extra, 0)


@triton.jit
def overflow_item(pid, is_worker, overflow, extra, ends, NUM_BINS: tl.constexpr):
    """``(expert, m_block)`` a program runs: its own expert's first block, or for a worker the
    expert and block of overflow item ``overflow`` (see ``overflow_blocks``)."""
    owner = tl.sum((ends <= overflow).to(tl.int32))
    owner_first = tl.sum(tl.where(tl.arange(0, NUM_BINS) == owner, ends - extra, 0))
    expert = tl.where(is_worker, owner, pid)
    m_block = tl.where(is_worker, overflow - owner_first + 1, 0)
    return expert, m_block


@triton.jit
def gate_up_block(a_ptr, slots, slot_ok, w13_desc, bias1_ptr, activated_ptr, expert, K, N_OUT,
                  stride_am, stride_act, stride_bias1, up_offset, DESC_ROWS, DESC_UP_ROW,
                  DESC_UP_COL, DESC_CHUNK_ROWS, CHUNK: tl.constexpr, TOP_K: tl.constexpr,
                  GATED: tl.constexpr, GATE_ROW_STEP: tl.constexpr, ACTIVATION: tl.constexpr,
                  SWIGLU_ALPHA: tl.constexpr, SWIGLU_LIMIT: tl.constexpr,
                  HAS_BIAS: tl.constexpr, IEEE_FP32: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N1: tl.constexpr, BLOCK_K1: tl.constexpr, STAGES: tl.constexpr,
                  ACT_EVICTION: tl.constexpr):  # fmt: skip
    """GEMM1 of one block of slots over every activation column block, activated rows stored."""
    k_steps = tl.cdiv(K, BLOCK_K1)
    offs_k = tl.arange(0, BLOCK_K1)
    offs_c = tl.arange(0, CHUNK if CHUNK else BLOCK_K1)
    offs_n = tl.arange(0, BLOCK_N1)
    a_rows = a_ptr + (slots // TOP_K)[:, None] * stride_am
    first_row = expert * DESC_ROWS
    gate_acc = tl.zeros([BLOCK_M, BLOCK_N1], tl.float32)
    up_acc = tl.zeros([BLOCK_M, BLOCK_N1], tl.float32)
    for step in tl.range(0, tl.cdiv(N_OUT, BLOCK_N1) * k_steps, num_stages=STAGES):
        n_block = step // k_steps
        k_start = (step % k_steps) * BLOCK_K1
        gate_row = (first_row + n_block * BLOCK_N1).to(tl.int32)
        keep = (step % k_steps != 0).to(tl.float32)  # a column block starts from zero
        if CHUNK:  # a step of BLOCK_K1 is BLOCK_K1 / CHUNK products of one chunk each
            for part in tl.static_range(BLOCK_K1 // CHUNK):
                k_at = k_start + part * CHUNK
                a = tl.load(a_rows + (k_at + offs_c)[None, :],
                            mask=slot_ok[:, None] & (k_at + offs_c < K)[None, :], other=0.0)  # fmt: skip
                # past K the last chunk again, whose A columns are zeros
                chunk = tl.minimum(k_at // CHUNK, tl.cdiv(K, CHUNK) - 1)
                row = gate_row + chunk * DESC_CHUNK_ROWS
                if part == 0:
                    gate_acc *= keep
                    up_acc *= keep
                gate_acc = dot(a, w13_desc.load([row, 0]).T, gate_acc, IEEE_FP32)
                if GATED:
                    up_tile = w13_desc.load([row + DESC_UP_ROW, DESC_UP_COL]).T
                    up_acc = dot(a, up_tile, up_acc, IEEE_FP32)
        else:
            a = tl.load(a_rows + (k_start + offs_k)[None, :],
                        mask=slot_ok[:, None] & (k_start + offs_k < K)[None, :], other=0.0)  # fmt: skip
            gate_acc = dot(a, w13_desc.load([gate_row, k_start]).T, gate_acc * keep, IEEE_FP32)
            if GATED:
                up_tile = w13_desc.load([gate_row + DESC_UP_ROW, DESC_UP_COL + k_start]).T
                up_acc = dot(a, up_tile, up_acc * keep, IEEE_FP32)
        if step % k_steps == k_steps - 1:
            cols = n_block * BLOCK_N1 + offs_n
            col_ok = cols < N_OUT
            gate = gate_acc
            up = up_acc
            if HAS_BIAS:
                bias_row = bias1_ptr + expert * stride_bias1 + cols * GATE_ROW_STEP
                gate += tl.load(bias_row, mask=col_ok, other=0.0).to(tl.float32)[None, :]
                if GATED:
                    up += tl.load(bias_row + up_offset, mask=col_ok,
                                  other=0.0).to(tl.float32)[None, :]  # fmt: skip
            if GATED:
                out = gated_activation(gate, up, ACTIVATION, SWIGLU_ALPHA, SWIGLU_LIMIT)
            else:
                out = unary_activation(gate, ACTIVATION)
            tl.store(activated_ptr + slots[:, None] * stride_act + cols[None, :],
                     out.to(activated_ptr.dtype.element_ty),
                     mask=slot_ok[:, None] & col_ok[None, :], eviction_policy=ACT_EVICTION)  # fmt: skip


@triton.jit
def down_block(activated_ptr, slots, slot_ok, w2_desc, bias2_ptr, topk_weights_ptr, rows_ptr,
               expert, K, N_OUT, stride_act, stride_rows, stride_bias2, W2_ROWS, W2_CHUNK_ROWS,
               CHUNK: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
               IEEE_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N2: tl.constexpr,
               BLOCK_K2: tl.constexpr, STAGES: tl.constexpr,
               ROWS_EVICTION: tl.constexpr):  # fmt: skip
    """GEMM2 of one block of slots over every output column block, weighted rows stored."""
    k_steps = tl.cdiv(N_OUT, BLOCK_K2)
    offs_k = tl.arange(0, BLOCK_K2)
    offs_c = tl.arange(0, CHUNK if CHUNK else BLOCK_K2)
    offs_n = tl.arange(0, BLOCK_N2)
    a_rows = activated_ptr + slots[:, None] * stride_act
    first_row = expert * W2_ROWS
    weight = tl.full([BLOCK_M], 1.0, tl.float32)
    if MUL_ROUTED_WEIGHT:
        weight = tl.load(topk_weights_ptr + slots, mask=slot_ok, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_N2], tl.float32)
    for step in tl.range(0, tl.cdiv(K, BLOCK_N2) * k_steps, num_stages=STAGES):
        n_block = step // k_steps
        k_start = (step % k_steps) * BLOCK_K2
        b_row = (first_row + n_block * BLOCK_N2).to(tl.int32)
        keep = (step % k_steps != 0).to(tl.float32)
        if CHUNK:  # as in gate_up_block
            for part in tl.static_range(BLOCK_K2 // CHUNK):
                k_at = k_start + part * CHUNK
                a = tl.load(a_rows + (k_at + offs_c)[None, :],
                            mask=slot_ok[:, None] & (k_at + offs_c < N_OUT)[None, :], other=0.0)  # fmt: skip
                chunk = tl.minimum(k_at // CHUNK, tl.cdiv(N_OUT, CHUNK) - 1)
                if part == 0:
                    acc *= keep
                acc = dot(a, w2_desc.load([b_row + chunk * W2_CHUNK_ROWS, 0]).T, acc, IEEE_FP32)
        else:
            a = tl.load(a_rows + (k_start + offs_k)[None, :],
                        mask=slot_ok[:, None] & (k_start + offs_k < N_OUT)[None, :], other=0.0)  # fmt: skip
            acc = dot(a, w2_desc.load([b_row, k_start]).T, acc * keep, IEEE_FP32)
        if step % k_steps == k_steps - 1:
            cols = n_block * BLOCK_N2 + offs_n
            col_ok = cols < K
            out = acc
            if HAS_BIAS:
                bias = tl.load(bias2_ptr + expert * stride_bias2 + cols, mask=col_ok, other=0.0)
                out += bias.to(tl.float32)[None, :]
            if MUL_ROUTED_WEIGHT:
                out *= weight[:, None]
            tl.store(rows_ptr + slots[:, None] * stride_rows + cols[None, :],
                     out.to(rows_ptr.dtype.element_ty),
                     mask=slot_ok[:, None] & col_ok[None, :], eviction_policy=ROWS_EVICTION)  # fmt: skip


@triton.jit
def expert_programs_kernel(
    a_ptr, w13_desc, w2_desc, activated_ptr, rows_ptr, bias1_ptr, bias2_ptr, topk_weights_ptr,
    topk_ids_ptr, expert_map_ptr, scratch_ptr, num_global_experts, num_local_experts,
    num_workers, num_slots, K, N_OUT, up_offset, stride_am, stride_act, stride_rows,
    stride_bias1, stride_bias2, DESC_ROWS, DESC_UP_ROW, DESC_UP_COL, DESC_CHUNK_ROWS, W2_ROWS,
    W2_CHUNK_ROWS, TOP_K: tl.constexpr, HAS_MAP: tl.constexpr, GATED: tl.constexpr,
    GATE_ROW_STEP: tl.constexpr, ACTIVATION: tl.constexpr, SWIGLU_ALPHA: tl.constexpr,
    SWIGLU_LIMIT: tl.constexpr, HAS_BIAS1: tl.constexpr, HAS_BIAS2: tl.constexpr,
    MUL_ROUTED_WEIGHT: tl.constexpr, IEEE_FP32: tl.constexpr, SCAN: tl.constexpr,
    NUM_BINS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N1: tl.constexpr,
    BLOCK_K1: tl.constexpr, BLOCK_N2: tl.constexpr, BLOCK_K2: tl.constexpr,
    CHUNK1: tl.constexpr, CHUNK2: tl.constexpr, STAGES: tl.constexpr, ACT_EVICTION: tl.constexpr,
    ROWS_EVICTION: tl.constexpr, WAIT_PRIOR: tl.constexpr, LAUNCH_NEXT: tl.constexpr,
):  # fmt: skip
    """Programs below ``num_local_experts`` run their expert's first block; the
    ``num_workers`` after them share every expert's further blocks (``overflow_blocks``), each
    taking every ``num_workers``-th, so that a busy expert's blocks run side by side rather than
    one after another in its own program."""
    wait_for_prior_kernel(WAIT_PRIOR, LAUNCH_NEXT)
    pid = tl.program_id(0)
    is_worker = pid >= num_local_experts
    worker = pid - num_local_experts
    scratch_ptr += pid * BLOCK_M
    extra = tl.zeros([NUM_BINS], tl.int32)
    ends = tl.zeros([NUM_BINS], tl.int32)
    if is_worker:
        extra, ends = overflow_blocks(topk_ids_ptr, expert_map_ptr, num_global_experts,
                                      num_slots, num_local_experts, HAS_MAP, SCAN, BLOCK_M,
                                      NUM_BINS)  # fmt: skip
    expert, m_block = overflow_item(pid, is_worker, worker, extra, ends, NUM_BINS)
    slots, slot_ok, count = expert_slots(topk_ids_ptr, expert_map_ptr, num_global_experts,
                                         expert, num_slots, m_block, scratch_ptr, HAS_MAP, SCAN,
                                         BLOCK_M)  # fmt: skip
    # an expert's program runs its first block if it has one; a worker every num_workers-th
    # further block from its own on (each exists)
    total = tl.sum(extra)
    num_items = tl.where(is_worker, tl.cdiv(tl.maximum(total - worker, 0), num_workers),
                         (count > 0).to(tl.int32))  # fmt: skip
    for item in range(0, num_items):
        if item > 0:
            expert, m_block = overflow_item(pid, is_worker, worker + item * num_workers, extra,
                                            ends, NUM_BINS)  # fmt: skip
            slots, slot_ok, count = expert_slots(topk_ids_ptr, expert_map_ptr,
                                                 num_global_experts, expert, num_slots, m_block,
                                                 scratch_ptr, HAS_MAP, SCAN, BLOCK_M)  # fmt: skip
        gate_up_block(a_ptr, slots, slot_ok, w13_desc, bias1_ptr, activated_ptr, expert, K,
                      N_OUT, stride_am, stride_act, stride_bias1, up_offset, DESC_ROWS,
                      DESC_UP_ROW, DESC_UP_COL, DESC_CHUNK_ROWS, CHUNK1, TOP_K, GATED,
                      GATE_ROW_STEP, ACTIVATION, SWIGLU_ALPHA, SWIGLU_LIMIT, HAS_BIAS1, IEEE_FP32,
                      BLOCK_M, BLOCK_N1, BLOCK_K1, STAGES, ACT_EVICTION)  # fmt: skip
        # every warp's activated rows are stored before any warp reads them back
        tl.debug_barrier()
        down_block(activated_ptr, slots, slot_ok, w2_desc, bias2_ptr, topk_weights_ptr,
                   rows_ptr, expert, K, N_OUT, stride_act, stride_rows, stride_bias2, W2_ROWS,
                   W2_CHUNK_ROWS, CHUNK2, MUL_ROUTED_WEIGHT, HAS_BIAS2, IEEE_FP32, BLOCK_M,
                   BLOCK_N2, BLOCK_K2, STAGES, ROWS_EVICTION)  # fmt: skip
