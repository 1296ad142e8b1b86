"""GEMM1 of the standard format with the activation in its epilogue.

Same tiling as ``grouped_gemm_kernel`` (each M-tile of sorted slots belongs to one expert, A rows
``slot // TOP_K``), but a tile of ``BLOCK_N`` *activation* columns accumulates the matching gate
and up rows of ``W13 [E, N, K]`` side by side, applies the activation to the float32
accumulators and stores only ``[slots, N_OUT]``: the ``[slots, N]`` GEMM1 output never reaches
memory. Gate column ``n`` is W13 row ``n * GATE_ROW_STEP`` and up column ``n`` that row plus
``up_offset`` (``(1, I)`` for ``[gate | up]``, ``(2, 1)`` for gpt-oss's interleaved layout).
Non-gated activations use one accumulator over rows ``n``. With ``B_TMA`` the W13 tiles come
through ``b_desc`` (see ``weight_descriptor``): expert ``e``'s gate column ``n`` is view row
``e * DESC_ROWS + n``, its up column view row ``+ DESC_UP_ROW``, columns ``+ DESC_UP_COL``.
With ``ZERO_COUNTERS`` the first programs also zero GEMM2's top-k sum counters (see
``topk_sum_epilogue``), which GEMM2 uses after this kernel in stream order. With
``EXPERT_GROUPS`` (aligned tiles only) the tile order groups each expert's m-tiles (see
``program_tile``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.activation_epilogue import gated_activation, unary_activation
from moekit.experts._triton_impl.tiles import dot, program_tile, tile_matrix_rows, tile_rows
from moekit.experts._triton_impl.topk_sum_epilogue import zero_counters


@triton.jit
def gate_up_gemm_kernel(
    a_ptr, a_desc, b_ptr, b_desc, c_ptr, bias_ptr,
    sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    topk_ids_ptr, expert_map_ptr, num_global_experts, counters_ptr, num_counters,
    N_OUT, K, num_valid_slots, num_sorted, up_offset,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_bias_e, stride_bias_n, DESC_ROWS, DESC_UP_ROW, DESC_UP_COL,
    SLOTS_FROM_IDS: tl.constexpr, HAS_MAP: tl.constexpr, ZERO_COUNTERS: tl.constexpr,
    COUNTER_BLOCK: tl.constexpr, TOP_K: tl.constexpr, GATED: tl.constexpr,
    GATE_ROW_STEP: tl.constexpr,
    ACTIVATION: tl.constexpr, SWIGLU_ALPHA: tl.constexpr, SWIGLU_LIMIT: tl.constexpr,
    HAS_BIAS: tl.constexpr, IEEE_FP32: tl.constexpr, B_TMA: tl.constexpr,
    A_ROWS_SORTED: tl.constexpr, A_TMA: tl.constexpr, C_ROWS_SORTED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EXPERT_GROUPS: tl.constexpr,
):  # fmt: skip
    if ZERO_COUNTERS:
        zero_counters(counters_ptr, num_counters, COUNTER_BLOCK)
    if SLOTS_FROM_IDS:
        num_m_tiles = num_valid_slots
    else:
        num_m_tiles = tl.cdiv(num_sorted, BLOCK_M)
    pid_m, pid_n = program_tile(expert_ids_ptr, num_m_tiles, num_m_tiles,
                                tl.cdiv(N_OUT, BLOCK_N), GROUP_M, EXPERT_GROUPS)  # fmt: skip
    if not SLOTS_FROM_IDS:  # noqa: SIM102 (a compile-time branch: no load when it is off)
        if pid_m * BLOCK_M >= tl.load(num_tokens_post_padded_ptr):
            return
    slots, slot_ok, expert = tile_rows(
        pid_m, sorted_token_ids_ptr, expert_ids_ptr, num_sorted, num_valid_slots, topk_ids_ptr,
        expert_map_ptr, num_global_experts, SLOTS_FROM_IDS, HAS_MAP, BLOCK_M,
    )  # fmt: skip
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N_OUT
    c_rows, c_row_ok = tile_matrix_rows(
        pid_m, slots, slot_ok, num_sorted, C_ROWS_SORTED, 1, BLOCK_M
    )
    c_ptrs = c_ptr + c_rows[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_ok = c_row_ok[:, None] & n_ok[None, :]
    if expert == -1:  # aligned: a block of no local expert; from ids: a skipped slot
        if not SLOTS_FROM_IDS:
            tl.store(c_ptrs, tl.zeros([BLOCK_M, BLOCK_N], c_ptr.dtype.element_ty), mask=c_ok)
        return

    gate_rows = offs_n * GATE_ROW_STEP
    up_rows = gate_rows + up_offset
    offs_k = tl.arange(0, BLOCK_K)
    a_rows, a_ok = tile_matrix_rows(
        pid_m, slots, slot_ok, num_sorted, A_ROWS_SORTED, TOP_K, BLOCK_M
    )
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    a_row = (pid_m * BLOCK_M).to(tl.int32)  # the first A row in a_desc's view
    b_expert = b_ptr + expert * stride_be + offs_k[:, None] * stride_bk
    gate_ptrs = b_expert + gate_rows[None, :] * stride_bn
    up_ptrs = b_expert + up_rows[None, :] * stride_bn
    gate_row = (expert * DESC_ROWS + pid_n * BLOCK_N).to(tl.int32)  # in b_desc's view
    gate_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    up_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k_start in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k_start
        if A_TMA:
            a = a_desc.load([a_row, k_start])
        else:
            a = tl.load(a_ptrs, mask=a_ok[:, None] & k_ok[None, :], other=0.0)
        b_ok = k_ok[:, None] & n_ok[None, :]
        if B_TMA:
            gate = b_desc.load([gate_row, k_start]).T
        else:
            gate = tl.load(gate_ptrs, mask=b_ok, other=0.0)
        gate_acc = dot(a, gate, gate_acc, IEEE_FP32)
        if GATED:
            if B_TMA:
                up = b_desc.load([gate_row + DESC_UP_ROW, DESC_UP_COL + k_start]).T
            else:
                up = tl.load(up_ptrs, mask=b_ok, other=0.0)
            up_acc = dot(a, up, up_acc, IEEE_FP32)
        a_ptrs += BLOCK_K * stride_ak
        gate_ptrs += BLOCK_K * stride_bk
        up_ptrs += BLOCK_K * stride_bk

    if HAS_BIAS:
        bias_expert = bias_ptr + expert * stride_bias_e
        gate_bias = tl.load(bias_expert + gate_rows * stride_bias_n, mask=n_ok, other=0.0)
        gate_acc += gate_bias.to(tl.float32)[None, :]
        if GATED:
            up_bias = tl.load(bias_expert + up_rows * stride_bias_n, mask=n_ok, other=0.0)
            up_acc += up_bias.to(tl.float32)[None, :]
    if GATED:
        out = gated_activation(gate_acc, up_acc, ACTIVATION, SWIGLU_ALPHA, SWIGLU_LIMIT)
    else:
        out = unary_activation(gate_acc, ACTIVATION)
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=c_ok)
