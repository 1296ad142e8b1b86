"""Copy of the hidden states in the aligned order, so GEMM1's A tiles are blocks of rows."""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.programmatic_launch import wait_for_prior_kernel


@triton.jit
def gather_rows_kernel(
    src_ptr, dst_ptr, sorted_token_ids_ptr, num_tokens_post_padded_ptr,
    num_valid_slots, num_sorted, K, stride_src_m, stride_src_k, stride_dst_m,
    TOP_K: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    WAIT_PRIOR: tl.constexpr, LAUNCH_NEXT: tl.constexpr,
):  # fmt: skip
    """``dst[p] = src[sorted_token_ids[p] // TOP_K]`` for the sorted positions ``p`` of the
    blocks below ``num_tokens_post_padded``; padding positions (the sentinel) get zeros and
    blocks past the last aligned tile are left alone (no GEMM tile reads them)."""
    wait_for_prior_kernel(WAIT_PRIOR, LAUNCH_NEXT)
    first = tl.program_id(0) * BLOCK_R
    if first >= tl.load(num_tokens_post_padded_ptr):
        return
    rows = first + tl.arange(0, BLOCK_R)
    row_ok = rows < num_sorted
    slots = tl.load(sorted_token_ids_ptr + rows, mask=row_ok, other=num_valid_slots)
    tokens = (slots // TOP_K).to(tl.int64)
    real = slots < num_valid_slots
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < K
    values = tl.load(src_ptr + tokens[:, None] * stride_src_m + cols[None, :] * stride_src_k,
                     mask=real[:, None] & col_ok[None, :], other=0.0)  # fmt: skip
    tl.store(dst_ptr + rows.to(tl.int64)[:, None] * stride_dst_m + cols[None, :], values,
             mask=row_ok[:, None] & col_ok[None, :])  # fmt: skip
