"""GEMM1 of the standard format with the activation in its epilogue.

Same tiling as ``grouped_gemm_kernel`` (each M-tile of sorted slots belongs to one expert, A rows
``slot // TOP_K``), but a tile of ``BLOCK_N`` *activation* columns accumulates the matching gate
and up rows of ``W13 [E, N, K]`` side by side, applies the activation to the float32
accumulators and stores only ``[slots, N_OUT]``: the ``[slots, N]`` GEMM1 output never reaches
memory. Gate column ``n`` is W13 row ``n * GATE_ROW_STEP`` and up column ``n`` that row plus
``up_offset`` (``(1, I)`` for ``[gate | up]``, ``(2, 1)`` for gpt-oss's interleaved layout).
Non-gated activations use one accumulator over rows ``n``. With ``B_TMA`` the W13 tiles come
through ``b_desc`` (see ``weight_descriptor``): expert ``e``'s gate column ``n`` is view row
``e * DESC_ROWS + n``, its up column view row ``+ DESC_UP_ROW``, columns ``+ DESC_UP_COL``. With
``B_CHUNK`` W13 is stored in K chunks of ``B_CHUNK`` columns (see ``chunk_weights``); through
TMA chunk ``c`` is then ``c * DESC_CHUNK_ROWS`` view rows on (the up column at ``DESC_UP_COL``
within the chunk's view row), column ``k`` at ``k % B_CHUNK`` of chunk ``k // B_CHUNK``, and each
K step of ``BLOCK_K`` is ``BLOCK_K / DOT_K`` products of ``DOT_K`` columns, within one chunk.
With ``ZERO_COUNTERS`` the first programs also zero GEMM2's top-k sum counters (see
``topk_sum_epilogue``), which GEMM2 uses after this kernel in stream order. With
``EXPERT_GROUPS`` (aligned tiles only) the tile order groups each expert's m-tiles (see
``program_tile``). With ``TAIL_M`` (aligned tiles only) a program also computes the next m-tile's
first ``TAIL_M`` rows when that tile is its expert's short last one (see ``tail_fold``), with
``TAIL_SWAP`` as the transposed product, so that those rows fill the MMA's N operand.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.activation_epilogue import gated_activation, unary_activation
from moekit.experts._triton_impl.programmatic_launch import wait_for_prior_kernel
from moekit.experts._triton_impl.tail_fold import (
    tail_folds,
    tail_product,
    tail_result,
    tail_rows,
    tail_zeros,
)
from moekit.experts._triton_impl.tiles import (
    chunked_columns,
    dot,
    program_tile,
    tile_matrix_rows,
    tile_rows,
)
from moekit.experts._triton_impl.topk_sum_epilogue import zero_counters


@triton.jit
def gate_up_products(
    a_ptrs, a_ok, a_desc, a_row, tail_a_ptrs, tail_a_ok, gate_ptrs, up_ptrs, b_desc, gate_row,
    n_ok, K, stride_ak, stride_bk, stride_bc, DESC_UP_ROW, DESC_UP_COL, DESC_CHUNK_ROWS,
    GATED: tl.constexpr, IEEE_FP32: tl.constexpr, B_TMA: tl.constexpr, B_CHUNK: tl.constexpr,
    A_TMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_K: tl.constexpr, TAIL_ROWS: tl.constexpr, TAIL_SWAP: tl.constexpr,
):  # fmt: skip
    """The K loop: float32 ``(gate, up, tail_gate, tail_up)`` accumulators, ``[BLOCK_M, BLOCK_N]``
    of the tile, and with ``TAIL_ROWS`` ``[TAIL_ROWS, BLOCK_N]`` of the folded tail rows, which
    use the same weight tiles (without, the tile's again). Each step of ``BLOCK_K`` is
    ``BLOCK_K / DOT_K`` products of ``DOT_K`` columns (the pointers span ``DOT_K``). With
    ``B_CHUNK`` (W13 in K chunks of ``B_CHUNK`` columns) ``gate_ptrs`` and ``up_ptrs`` hold no K
    offset, chunk ``c`` lies ``c * stride_bc`` elements on, and through TMA chunk ``c`` of
    ``b_desc`` is ``c * DESC_CHUNK_ROWS`` view rows on, column ``k`` at ``k % B_CHUNK`` of chunk
    ``k // B_CHUNK``."""
    offs_k = tl.arange(0, DOT_K)
    gate_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    up_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if TAIL_ROWS:
        tail_gate = tail_zeros(TAIL_ROWS, BLOCK_N, TAIL_SWAP)
        tail_up = tail_zeros(TAIL_ROWS, BLOCK_N, TAIL_SWAP)
    for k_start in range(0, K, BLOCK_K):
        for part in tl.static_range(BLOCK_K // DOT_K):
            k_at = k_start + part * DOT_K
            k_ok = offs_k < K - k_at
            a_at = part * DOT_K * stride_ak
            if B_CHUNK:  # a chunk's offsets: the pointers hold none
                b_at = chunked_columns(k_at + offs_k, stride_bc, B_CHUNK)[:, None]
            else:
                b_at = part * DOT_K * stride_bk
            if A_TMA:
                a = a_desc.load([a_row, k_at])
            else:
                a = tl.load(a_ptrs + a_at, mask=a_ok[:, None] & k_ok[None, :], other=0.0)
            if TAIL_ROWS:
                tail_a = tl.load(tail_a_ptrs + a_at, mask=tail_a_ok[:, None] & k_ok[None, :],
                                 other=0.0)  # fmt: skip
            b_ok = k_ok[:, None] & n_ok[None, :]
            if B_TMA and B_CHUNK:
                # past K (a step's last product) the last chunk again, whose A columns are
                # zeros, rather than the next expert's first
                chunk = tl.minimum(k_at // B_CHUNK, tl.cdiv(K, B_CHUNK) - 1)
                chunk_row = gate_row + chunk * DESC_CHUNK_ROWS
                chunk_col = k_at % B_CHUNK
                gate = b_desc.load([chunk_row, chunk_col]).T
            elif B_TMA:
                gate = b_desc.load([gate_row, k_at]).T
            else:
                gate = tl.load(gate_ptrs + b_at, mask=b_ok, other=0.0)
            gate_acc = dot(a, gate, gate_acc, IEEE_FP32)
            if TAIL_ROWS:
                tail_gate = tail_product(tail_a, gate, tail_gate, IEEE_FP32, TAIL_SWAP)
            if GATED:
                if B_TMA and B_CHUNK:
                    up = b_desc.load([chunk_row + DESC_UP_ROW, DESC_UP_COL + chunk_col]).T
                elif B_TMA:
                    up = b_desc.load([gate_row + DESC_UP_ROW, DESC_UP_COL + k_at]).T
                else:
                    up = tl.load(up_ptrs + b_at, mask=b_ok, other=0.0)
                up_acc = dot(a, up, up_acc, IEEE_FP32)
                if TAIL_ROWS:
                    tail_up = tail_product(tail_a, up, tail_up, IEEE_FP32, TAIL_SWAP)
        a_ptrs += BLOCK_K * stride_ak
        tail_a_ptrs += BLOCK_K * stride_ak
        if not B_CHUNK:
            gate_ptrs += BLOCK_K * stride_bk
            up_ptrs += BLOCK_K * stride_bk
    if TAIL_ROWS:
        tail_gate = tail_result(tail_gate, TAIL_SWAP)
        tail_up = tail_result(tail_up, TAIL_SWAP)
    else:
        tail_gate = gate_acc
        tail_up = up_acc
    return gate_acc, up_acc, tail_gate, tail_up


@triton.jit
def store_activated(gate_acc, up_acc, gate_bias, up_bias, c_ptrs, c_ok, GATED: tl.constexpr,
                    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
                    SWIGLU_ALPHA: tl.constexpr, SWIGLU_LIMIT: tl.constexpr,
                    C_EVICTION: tl.constexpr):  # fmt: skip
    """Adds the bias rows, applies the activation and stores the tile."""
    if HAS_BIAS:
        gate_acc += gate_bias[None, :]
        if GATED:
            up_acc += up_bias[None, :]
    if GATED:
        out = gated_activation(gate_acc, up_acc, ACTIVATION, SWIGLU_ALPHA, SWIGLU_LIMIT)
    else:
        out = unary_activation(gate_acc, ACTIVATION)
    tl.store(c_ptrs, out.to(c_ptrs.dtype.element_ty), mask=c_ok, eviction_policy=C_EVICTION)


@triton.jit
def gate_up_gemm_kernel(
    a_ptr, a_desc, b_ptr, b_desc, c_ptr, bias_ptr,
    sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    topk_ids_ptr, expert_map_ptr, num_global_experts, counters_ptr, num_counters,
    N_OUT, K, num_valid_slots, num_sorted, up_offset,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_bc, stride_cm, stride_cn,
    stride_bias_e, stride_bias_n, DESC_ROWS, DESC_UP_ROW, DESC_UP_COL, DESC_CHUNK_ROWS,
    SLOTS_FROM_IDS: tl.constexpr, HAS_MAP: tl.constexpr, ZERO_COUNTERS: tl.constexpr,
    COUNTER_BLOCK: tl.constexpr, TOP_K: tl.constexpr, GATED: tl.constexpr,
    GATE_ROW_STEP: tl.constexpr,
    ACTIVATION: tl.constexpr, SWIGLU_ALPHA: tl.constexpr, SWIGLU_LIMIT: tl.constexpr,
    HAS_BIAS: tl.constexpr, IEEE_FP32: tl.constexpr, B_TMA: tl.constexpr, B_CHUNK: tl.constexpr,
    A_ROWS_SORTED: tl.constexpr, A_TMA: tl.constexpr, C_ROWS_SORTED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_K: tl.constexpr,
    GROUP_M: tl.constexpr, EXPERT_GROUPS: tl.constexpr, TAIL_M: tl.constexpr, TAIL_SWAP: tl.constexpr,
    C_EVICTION: tl.constexpr, WAIT_PRIOR: tl.constexpr, LAUNCH_NEXT: tl.constexpr,
):  # fmt: skip
    wait_for_prior_kernel(WAIT_PRIOR, LAUNCH_NEXT)
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
    if TAIL_M:  # noqa: SIM102 (a compile-time branch)
        if tail_folds(pid_m, expert_ids_ptr, sorted_token_ids_ptr, num_sorted, num_valid_slots,
                      BLOCK_M, TAIL_M):  # fmt: skip
            return  # the previous tile's program computes this tile's rows
    slots, slot_ok, expert = tile_rows(
        pid_m, sorted_token_ids_ptr, expert_ids_ptr, num_sorted, num_valid_slots, topk_ids_ptr,
        expert_map_ptr, num_global_experts, SLOTS_FROM_IDS, HAS_MAP, BLOCK_M,
    )  # fmt: skip
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N_OUT
    start = pid_m * BLOCK_M
    c_rows, c_row_ok = tile_matrix_rows(
        start, slots, slot_ok, num_sorted, C_ROWS_SORTED, 1, BLOCK_M
    )
    c_ptrs = c_ptr + c_rows[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_ok = c_row_ok[:, None] & n_ok[None, :]
    if expert == -1:  # aligned: a block of no local expert; from ids: a skipped slot
        if not SLOTS_FROM_IDS:
            tl.store(c_ptrs, tl.zeros([BLOCK_M, BLOCK_N], c_ptr.dtype.element_ty), mask=c_ok)
        return

    gate_rows = offs_n * GATE_ROW_STEP
    up_rows = gate_rows + up_offset
    offs_k = tl.arange(0, DOT_K)
    a_rows, a_ok = tile_matrix_rows(
        start, slots, slot_ok, num_sorted, A_ROWS_SORTED, TOP_K, BLOCK_M
    )
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    a_row = start.to(tl.int32)  # the first A row in a_desc's view
    b_expert = b_ptr + expert * stride_be
    if not B_CHUNK:  # a chunk's K offsets come with each load
        b_expert += offs_k[:, None] * stride_bk
    gate_ptrs = b_expert + gate_rows[None, :] * stride_bn
    up_ptrs = b_expert + up_rows[None, :] * stride_bn
    gate_row = (expert * DESC_ROWS + pid_n * BLOCK_N).to(tl.int32)  # in b_desc's view
    gate_bias = 0.0
    up_bias = 0.0
    if HAS_BIAS:
        bias_expert = bias_ptr + expert * stride_bias_e
        gate_bias = tl.load(bias_expert + gate_rows * stride_bias_n, mask=n_ok, other=0.0)
        gate_bias = gate_bias.to(tl.float32)
        if GATED:
            up_bias = tl.load(bias_expert + up_rows * stride_bias_n, mask=n_ok, other=0.0)
            up_bias = up_bias.to(tl.float32)

    # A folded tail needs a second K loop; each loop is compiled only where it can run.
    if TAIL_M:
        if tail_folds(pid_m + 1, expert_ids_ptr, sorted_token_ids_ptr, num_sorted,
                      num_valid_slots, BLOCK_M, TAIL_M):  # fmt: skip
            tail_start = start + BLOCK_M
            tail_slots, tail_slot_ok, tail_a_rows, tail_a_ok = tail_rows(
                sorted_token_ids_ptr, tail_start, num_sorted, num_valid_slots, A_ROWS_SORTED,
                TOP_K, TAIL_M,
            )  # fmt: skip
            tail_a_ptrs = a_ptr + tail_a_rows[:, None] * stride_am + offs_k[None, :] * stride_ak
            gate_acc, up_acc, tail_gate, tail_up = gate_up_products(
                a_ptrs, a_ok, a_desc, a_row, tail_a_ptrs, tail_a_ok, gate_ptrs, up_ptrs, b_desc,
                gate_row, n_ok, K, stride_ak, stride_bk, stride_bc, DESC_UP_ROW, DESC_UP_COL,
                DESC_CHUNK_ROWS, GATED, IEEE_FP32, B_TMA, B_CHUNK, A_TMA, BLOCK_M, BLOCK_N,
                BLOCK_K, DOT_K, TAIL_M, TAIL_SWAP,
            )  # fmt: skip
            tail_c_rows, tail_c_ok = tile_matrix_rows(
                tail_start, tail_slots, tail_slot_ok, num_sorted, C_ROWS_SORTED, 1, TAIL_M
            )
            store_activated(
                tail_gate, tail_up, gate_bias, up_bias,
                c_ptr + tail_c_rows[:, None] * stride_cm + offs_n[None, :] * stride_cn,
                tail_c_ok[:, None] & n_ok[None, :], GATED, HAS_BIAS, ACTIVATION, SWIGLU_ALPHA,
                SWIGLU_LIMIT, C_EVICTION,
            )  # fmt: skip
        else:
            gate_acc, up_acc, _, _ = gate_up_products(
                a_ptrs, a_ok, a_desc, a_row, a_ptrs, a_ok, gate_ptrs, up_ptrs, b_desc, gate_row,
                n_ok, K, stride_ak, stride_bk, stride_bc, DESC_UP_ROW, DESC_UP_COL,
                DESC_CHUNK_ROWS, GATED, IEEE_FP32, B_TMA, B_CHUNK, A_TMA, BLOCK_M, BLOCK_N,
                BLOCK_K, DOT_K, 0, False,
            )  # fmt: skip
    else:
        gate_acc, up_acc, _, _ = gate_up_products(
            a_ptrs, a_ok, a_desc, a_row, a_ptrs, a_ok, gate_ptrs, up_ptrs, b_desc, gate_row,
            n_ok, K, stride_ak, stride_bk, stride_bc, DESC_UP_ROW, DESC_UP_COL, DESC_CHUNK_ROWS,
            GATED, IEEE_FP32, B_TMA, B_CHUNK, A_TMA, BLOCK_M, BLOCK_N, BLOCK_K, DOT_K, 0, False,
        )  # fmt: skip
    store_activated(gate_acc, up_acc, gate_bias, up_bias, c_ptrs, c_ok, GATED, HAS_BIAS,
                    ACTIVATION, SWIGLU_ALPHA, SWIGLU_LIMIT, C_EVICTION)  # fmt: skip
