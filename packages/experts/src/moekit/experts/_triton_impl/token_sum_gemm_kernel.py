"""GEMM2 in token order with the top-k sum, for decode: one program per (n-tile, token).

The program walks its token's ``TOP_K`` slots in slot order. For each local slot it multiplies
the slot's activated row by its expert's ``W2`` strip on the CUDA cores (a token row is one row:
an MMA tile would be mostly padding), adds the bias, multiplies by the routed weight and rounds
to the output dtype, as GEMM2 rounds the slot rows it stores; it then adds that row to a float32
total, as ``moe_sum`` does. Non-local and invalid slots add zeros (their loads are masked off),
so a token with none gets zeros. No per-slot rows go through memory, no counter or atomic is
needed, and the order of every sum is fixed. Programs run n-tile by n-tile, so the tokens that
share an expert read its strip side by side and all but the first find it in L2.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.programmatic_launch import wait_for_prior_kernel
from moekit.experts._triton_impl.tiles import chunked_columns, local_expert_of


@triton.jit
def step_product(acc, a_ptr, b_ptr, slot, expert, live, offs_n, n_ok, k_start, K, stride_am,
                 stride_ak, stride_be, stride_bn, stride_bk, stride_bc, BLOCK_K: tl.constexpr,
                 B_CHUNK: tl.constexpr):  # fmt: skip
    """``acc`` plus one ``BLOCK_K`` step of row ``slot`` of ``a`` times rows ``offs_n`` of
    ``b[expert]``, elementwise (reduced over K by the caller); nothing is read where not
    ``live``. With ``B_CHUNK`` ``b`` is stored in K chunks of ``B_CHUNK`` columns, ``stride_bc``
    elements from one to the next."""
    offs_k = k_start + tl.arange(0, BLOCK_K)
    k_ok = (offs_k < K) & live
    a = tl.load(a_ptr + slot * stride_am + offs_k * stride_ak, mask=k_ok, other=0.0)
    if B_CHUNK:
        b_cols = chunked_columns(offs_k, stride_bc, B_CHUNK)
    else:
        b_cols = offs_k * stride_bk
    b = tl.load(b_ptr + expert * stride_be + offs_n[:, None] * stride_bn + b_cols[None, :],
                mask=n_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
    return acc + b.to(tl.float32) * a.to(tl.float32)[None, :]


@triton.jit
def slot_row_product(a_ptr, b_ptr, slot, expert, offs_n, n_ok, K, stride_am, stride_ak,
                     stride_be, stride_bn, stride_bk, stride_bc, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, K_STEPS: tl.constexpr,
                     B_CHUNK: tl.constexpr):  # fmt: skip
    """float32 ``[BLOCK_N]``: row ``slot`` of ``a`` times rows ``offs_n`` of ``b[expert]``, zeros
    for a non-local slot (``expert < 0``), whose loads are masked off rather than branched
    around. With ``K_STEPS`` (K's steps of ``BLOCK_K``) the steps are unrolled, so that every
    step's loads can go out before the first adds; without, they run in a loop."""
    live = expert >= 0
    expert = tl.maximum(expert, 0)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    if K_STEPS:
        for step in tl.static_range(K_STEPS):
            acc = step_product(acc, a_ptr, b_ptr, slot, expert, live, offs_n, n_ok,
                               step * BLOCK_K, K, stride_am, stride_ak, stride_be, stride_bn,
                               stride_bk, stride_bc, BLOCK_K, B_CHUNK)  # fmt: skip
    else:
        for k_start in range(0, K, BLOCK_K):
            acc = step_product(acc, a_ptr, b_ptr, slot, expert, live, offs_n, n_ok, k_start, K,
                               stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_bc,
                               BLOCK_K, B_CHUNK)  # fmt: skip
    return tl.sum(acc, axis=1)


@triton.jit
def weighted_row(row, expert, slot, offs_n, n_ok, bias_ptr, topk_weights_ptr, stride_bias_e,
                 MUL_ROUTED_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):  # fmt: skip
    """The slot's float32 row with its expert's bias added (none for a non-local slot), times
    its routed weight."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + tl.maximum(expert, 0) * stride_bias_e + offs_n,
                       mask=n_ok & (expert >= 0), other=0.0)  # fmt: skip
        row += bias.to(tl.float32)
    if MUL_ROUTED_WEIGHT:
        row *= tl.load(topk_weights_ptr + slot).to(tl.float32)
    return row


@triton.jit
def token_sum_gemm_kernel(
    a_ptr, b_ptr, out_ptr, bias_ptr, topk_weights_ptr, topk_ids_ptr, expert_map_ptr,
    num_global_experts, num_tokens, N, K,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_bc, stride_bias_e, stride_om,
    stride_on, HAS_MAP: tl.constexpr, TOP_K: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    K_STEPS: tl.constexpr, B_CHUNK: tl.constexpr, WAIT_PRIOR: tl.constexpr,
):  # fmt: skip
    wait_for_prior_kernel(WAIT_PRIOR, False)  # the last kernel of a call: the next is the caller's
    pid = tl.program_id(0)
    pid_n = pid // num_tokens
    token = (pid % num_tokens).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    row_dtype = out_ptr.dtype.element_ty
    total = tl.zeros([BLOCK_N], dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        slot = token * TOP_K + j
        expert = local_expert_of(tl.load(topk_ids_ptr + slot), expert_map_ptr,
                                 num_global_experts, HAS_MAP)  # fmt: skip
        row = slot_row_product(a_ptr, b_ptr, slot, expert, offs_n, n_ok, K, stride_am,
                               stride_ak, stride_be, stride_bn, stride_bk, stride_bc, BLOCK_N,
                               BLOCK_K, K_STEPS, B_CHUNK)  # fmt: skip
        row = weighted_row(row, expert, slot, offs_n, n_ok, bias_ptr, topk_weights_ptr,
                           stride_bias_e, MUL_ROUTED_WEIGHT, HAS_BIAS)  # fmt: skip
        total += row.to(row_dtype).to(tl.float32)  # zeros for a non-local slot
    tl.store(out_ptr + token * stride_om + offs_n * stride_on, total.to(row_dtype), mask=n_ok)
