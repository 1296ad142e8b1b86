"""The grouped GEMM of the standard format: each M-tile of sorted slots belongs to one expert.

``sorted_token_ids`` (from ``moe_align_block_size``) lists flat slots ``t * top_k + j`` expert by
expert, each expert's segment padded to ``BLOCK_M`` with the sentinel ``num_valid_slots``. A tile
reads A rows ``slot // TOP_K`` (GEMM1 reads each token once per slot; GEMM2 runs with
``TOP_K = 1`` on per-slot rows), multiplies by its expert's ``B [N, K]``, accumulates in float32,
adds the bias, multiplies by the routed weight and stores C rows ``slot``. Sentinel rows are
skipped; a tile whose expert is ``-1`` (not on this rank) writes zeros. With ``SLOTS_FROM_IDS``
(one or a few tokens) each tile is one slot whose expert comes from ``topk_ids`` (see
``tile_rows``), and with ``FUSED_SUM`` the kernel also sums each token's ``SUM_TOP_K`` slot rows
into ``out`` (see
``topk_sum_epilogue``; one extra row of programs zeroes ``out`` when no slot is local).
With ``B_TMA`` the B tiles come through ``b_desc``, a descriptor over ``b`` seen as
``[E * N, K]`` (see ``weight_descriptor``), instead of pointer loads. With ``B_CHUNK`` ``b`` is
stored in K chunks of ``B_CHUNK`` columns (see ``chunk_weights``); through TMA each step of
``BLOCK_K`` is then ``BLOCK_K / DOT_K`` products of ``DOT_K`` columns, within one chunk. With
``EXPERT_GROUPS`` (aligned tiles only) the tile order groups each expert's m-tiles (see
``program_tile``). With ``TAIL_M`` (aligned tiles only) a program also computes the next m-tile's
first ``TAIL_M`` rows when that tile is its expert's short last one (see ``tail_fold``), with
``TAIL_SWAP`` as the transposed product, so that those rows fill the MMA's N operand.
"""

from __future__ import annotations

import triton
import triton.language as tl

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
from moekit.experts._triton_impl.topk_sum_epilogue import (
    local_slot_count,
    store_and_sum_tokens,
    zero_unrouted_tokens,
)


@triton.jit
def products(a_ptrs, a_ok, a_desc, a_row, tail_a_ptrs, tail_a_ok, b_ptrs, b_desc, b_row,
             b_chunk_rows, n_ok, K, stride_ak, stride_bk, stride_bc, IEEE_FP32: tl.constexpr,
             B_TMA: tl.constexpr, B_CHUNK: tl.constexpr, A_TMA: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
             DOT_K: tl.constexpr, TAIL_ROWS: tl.constexpr, TAIL_SWAP: tl.constexpr):  # fmt: skip
    """The K loop: float32 ``(acc, tail_acc)``, ``[BLOCK_M, BLOCK_N]`` of the tile, and with
    ``TAIL_ROWS`` ``[TAIL_ROWS, BLOCK_N]`` of the folded tail rows, which use the same B tiles
    (without, the tile's again). Each step of ``BLOCK_K`` is ``BLOCK_K / DOT_K`` products of
    ``DOT_K`` columns (``a_ptrs`` and ``tail_a_ptrs`` span ``DOT_K``). With ``B_CHUNK`` (B in K
    chunks of ``B_CHUNK`` columns) ``b_ptrs`` hold no K offset, chunk ``c`` lies ``c *
    stride_bc`` elements on, and through TMA chunk ``c`` of ``b_desc`` is ``c * b_chunk_rows``
    view rows on, column ``k`` at ``k % B_CHUNK`` of chunk ``k // B_CHUNK``."""
    offs_k = tl.arange(0, DOT_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if TAIL_ROWS:
        tail_acc = tail_zeros(TAIL_ROWS, BLOCK_N, TAIL_SWAP)
    for k_start in range(0, K, BLOCK_K):
        for part in tl.static_range(BLOCK_K // DOT_K):
            k_at = k_start + part * DOT_K
            k_ok = offs_k < K - k_at
            if A_TMA:
                a = a_desc.load([a_row, k_at])
            else:
                a = tl.load(a_ptrs + part * DOT_K * stride_ak, mask=a_ok[:, None] & k_ok[None, :],
                            other=0.0)  # fmt: skip
            if B_TMA and B_CHUNK:
                # past K (a step's last product) the last chunk again, whose A columns are zeros,
                # rather than the next expert's first
                chunk = tl.minimum(k_at // B_CHUNK, tl.cdiv(K, B_CHUNK) - 1)
                b = b_desc.load([b_row + chunk * b_chunk_rows, k_at % B_CHUNK]).T
            elif B_TMA:
                b = b_desc.load([b_row, k_at]).T
            elif B_CHUNK:
                b = tl.load(b_ptrs + chunked_columns(k_at + offs_k, stride_bc, B_CHUNK)[:, None],
                            mask=k_ok[:, None] & n_ok[None, :], other=0.0)  # fmt: skip
            else:
                b = tl.load(b_ptrs + part * DOT_K * stride_bk, mask=k_ok[:, None] & n_ok[None, :],
                            other=0.0)  # fmt: skip
            acc = dot(a, b, acc, IEEE_FP32)
            if TAIL_ROWS:
                tail_a = tl.load(tail_a_ptrs + part * DOT_K * stride_ak,
                                 mask=tail_a_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
                tail_acc = tail_product(tail_a, b, tail_acc, IEEE_FP32, TAIL_SWAP)
        a_ptrs += BLOCK_K * stride_ak
        tail_a_ptrs += BLOCK_K * stride_ak
        if not B_CHUNK:
            b_ptrs += BLOCK_K * stride_bk
    if TAIL_ROWS:
        tail_acc = tail_result(tail_acc, TAIL_SWAP)
    else:
        tail_acc = acc
    return acc, tail_acc


@triton.jit
def weighted_rows(acc, bias, topk_weights_ptr, slots, slot_ok, HAS_BIAS: tl.constexpr,
                  MUL_ROUTED_WEIGHT: tl.constexpr):  # fmt: skip
    """The accumulator with the bias row added and each row times its slot's routed weight."""
    if HAS_BIAS:
        acc += bias[None, :]
    if MUL_ROUTED_WEIGHT:
        weight = tl.load(topk_weights_ptr + slots, mask=slot_ok, other=0.0)
        acc *= weight.to(tl.float32)[:, None]
    return acc


@triton.jit
def grouped_gemm_kernel(
    a_ptr, a_desc, b_ptr, b_desc, c_ptr, bias_ptr, topk_weights_ptr,
    sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    topk_ids_ptr, expert_map_ptr, num_global_experts, out_ptr, counters_ptr, num_tokens,
    N, K, num_valid_slots, num_sorted, b_expert_rows, b_chunk_rows,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_bc, stride_cm, stride_cn,
    stride_bias_e, stride_om,
    SLOTS_FROM_IDS: tl.constexpr, HAS_MAP: tl.constexpr, FUSED_SUM: tl.constexpr,
    SUM_TOP_K: tl.constexpr, TOP_K: tl.constexpr,
    MUL_ROUTED_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE_FP32: tl.constexpr,
    B_TMA: tl.constexpr, B_CHUNK: tl.constexpr, A_ROWS_SORTED: tl.constexpr,
    A_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_K: tl.constexpr,
    GROUP_M: tl.constexpr, EXPERT_GROUPS: tl.constexpr, TAIL_M: tl.constexpr,
    TAIL_SWAP: tl.constexpr, C_EVICTION: tl.constexpr, WAIT_PRIOR: tl.constexpr, LAUNCH_NEXT: tl.constexpr,
):  # fmt: skip
    wait_for_prior_kernel(WAIT_PRIOR, LAUNCH_NEXT)
    if SLOTS_FROM_IDS:
        num_m_tiles = num_valid_slots
    else:
        num_m_tiles = tl.cdiv(num_sorted, BLOCK_M)
    num_n_tiles = tl.cdiv(N, BLOCK_N)
    grid_m_tiles = num_m_tiles
    if FUSED_SUM:
        grid_m_tiles += 1  # the row of programs that zeroes tokens with no local slot
    pid_m, pid_n = program_tile(expert_ids_ptr, num_m_tiles, grid_m_tiles, num_n_tiles, GROUP_M,
                                EXPERT_GROUPS)  # fmt: skip
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    if FUSED_SUM:  # noqa: SIM102 (a compile-time branch)
        if pid_m == num_m_tiles:
            zero_unrouted_tokens(out_ptr, topk_ids_ptr, expert_map_ptr, num_global_experts,
                                 num_tokens, offs_n, n_ok, stride_om, HAS_MAP, SUM_TOP_K,
                                 BLOCK_M, BLOCK_N)  # fmt: skip
            return
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
    c_ptrs = c_ptr + slots[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_ok = slot_ok[:, None] & n_ok[None, :]
    if expert == -1:  # aligned: a block of no local expert; from ids: a skipped slot
        if not SLOTS_FROM_IDS:
            tl.store(c_ptrs, tl.zeros([BLOCK_M, BLOCK_N], c_ptr.dtype.element_ty), mask=c_ok)
        return

    if FUSED_SUM:  # loaded before the K loop, so their latency hides behind it
        expected = local_slot_count(topk_ids_ptr, expert_map_ptr, num_global_experts,
                                    slots // SUM_TOP_K, slot_ok, HAS_MAP, SUM_TOP_K)  # fmt: skip
    offs_k = tl.arange(0, DOT_K)
    start = pid_m * BLOCK_M
    a_rows, a_ok = tile_matrix_rows(
        start, slots, slot_ok, num_sorted, A_ROWS_SORTED, TOP_K, BLOCK_M
    )
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    a_row = start.to(tl.int32)  # the first A row in a_desc's view
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :] * stride_bn
    if not B_CHUNK:  # a chunk's K offsets come with each load
        b_ptrs += offs_k[:, None] * stride_bk
    b_row = (expert * b_expert_rows + pid_n * BLOCK_N).to(tl.int32)  # first row in b_desc's view
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + expert * stride_bias_e + offs_n, mask=n_ok, other=0.0)
        bias = bias.to(tl.float32)

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
            acc, tail_acc = products(
                a_ptrs, a_ok, a_desc, a_row, tail_a_ptrs, tail_a_ok, b_ptrs, b_desc, b_row,
                b_chunk_rows, n_ok, K, stride_ak, stride_bk, stride_bc, IEEE_FP32, B_TMA, B_CHUNK,
                A_TMA, BLOCK_M, BLOCK_N, BLOCK_K, DOT_K, TAIL_M, TAIL_SWAP,
            )  # fmt: skip
            tail_acc = weighted_rows(tail_acc, bias, topk_weights_ptr, tail_slots, tail_slot_ok,
                                     HAS_BIAS, MUL_ROUTED_WEIGHT)  # fmt: skip
            tail_c_ptrs = c_ptr + tail_slots[:, None] * stride_cm + offs_n[None, :] * stride_cn
            tl.store(tail_c_ptrs, tail_acc.to(c_ptr.dtype.element_ty),
                     mask=tail_slot_ok[:, None] & n_ok[None, :],
                     eviction_policy=C_EVICTION)  # fmt: skip
        else:
            acc, _ = products(
                a_ptrs, a_ok, a_desc, a_row, a_ptrs, a_ok, b_ptrs, b_desc, b_row, b_chunk_rows,
                n_ok, K, stride_ak, stride_bk, stride_bc, IEEE_FP32, B_TMA, B_CHUNK, A_TMA, BLOCK_M,
                BLOCK_N, BLOCK_K, DOT_K, 0, False,
            )  # fmt: skip
    else:
        acc, _ = products(
            a_ptrs, a_ok, a_desc, a_row, a_ptrs, a_ok, b_ptrs, b_desc, b_row, b_chunk_rows, n_ok,
            K, stride_ak, stride_bk, stride_bc, IEEE_FP32, B_TMA, B_CHUNK, A_TMA, BLOCK_M, BLOCK_N,
            BLOCK_K, DOT_K, 0, False,
        )  # fmt: skip
    acc = weighted_rows(acc, bias, topk_weights_ptr, slots, slot_ok, HAS_BIAS, MUL_ROUTED_WEIGHT)
    if FUSED_SUM:
        store_and_sum_tokens(acc.to(c_ptr.dtype.element_ty), c_ptr, out_ptr, counters_ptr,
                             topk_ids_ptr, expert_map_ptr, num_global_experts, slots, slot_ok,
                             expected, offs_n, n_ok, pid_n, num_n_tiles, stride_cm, stride_cn,
                             stride_om, HAS_MAP, SUM_TOP_K)  # fmt: skip
    else:
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_ok, eviction_policy=C_EVICTION)
