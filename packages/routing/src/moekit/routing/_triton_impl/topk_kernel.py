"""One fused Triton kernel for every routing function.

A program owns ``BLOCK_T`` rows; their scores stay in registers as a ``[BLOCK_T, BLOCK_E]`` tile
from the load of the logits to the store of the ``k`` weights and ids. Top-k is ``k`` rounds of
max-and-mask: the largest key among the experts not yet taken, and among equal keys the lowest
expert index, so the slots come out in descending order with ties to the lower index.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _expert_scores(x, row_ok, col_ok, SIGMOID: tl.constexpr):
    """float32 scores of a logits tile (padding columns hold -inf); NaN where the spec says so."""
    if SIGMOID:
        scores = 1.0 / (1.0 + tl.exp(-x))
    else:
        has_nan = tl.max(tl.where(x != x, 1, 0), axis=1) > 0
        row_max = tl.max(tl.where(x != x, float("-inf"), x), axis=1)
        exp = tl.exp(x - row_max[:, None])
        total = tl.sum(tl.where(col_ok[None, :], exp, 0.0), axis=1)
        scores = exp / total[:, None]
        scores = tl.where(has_nan[:, None], float("nan"), scores)
    return scores


@triton.jit
def _kept_group_columns(key, cols, col_ok, BLOCK_T: tl.constexpr, HAS_BIAS: tl.constexpr,
                        NUM_GROUPS: tl.constexpr, GROUP_SIZE: tl.constexpr,
                        TOPK_GROUP: tl.constexpr, BLOCK_G: tl.constexpr):  # fmt: skip
    """``[BLOCK_T, BLOCK_E]`` 0/1: the columns of each row's ``TOPK_GROUP`` best groups."""
    group_of_col = cols // GROUP_SIZE
    group_idx = tl.arange(0, BLOCK_G)
    group_score = tl.full([BLOCK_T, BLOCK_G], float("-inf"), tl.float32)
    for g in tl.static_range(NUM_GROUPS):
        member = col_ok[None, :] & (group_of_col == g)[None, :]
        first = tl.max(tl.where(member, key, float("-inf")), axis=1)
        if HAS_BIAS:  # the sum of the group's top two keys (the top may be shared by two)
            ties = tl.sum(tl.where(member & (key == first[:, None]), 1, 0), axis=1)
            below = tl.max(tl.where(member & (key < first[:, None]), key, float("-inf")), axis=1)
            score = first + tl.where(ties >= 2, first, below)
        else:
            score = first
        group_score = tl.where(group_idx[None, :] == g, score[:, None], group_score)
    kept = tl.zeros([BLOCK_T, BLOCK_G], tl.int32)
    for _ in tl.static_range(TOPK_GROUP):
        open_group = (group_idx[None, :] < NUM_GROUPS) & (kept == 0)
        best = tl.max(tl.where(open_group, group_score, float("-inf")), axis=1)
        pick = tl.min(
            tl.where(open_group & (group_score == best[:, None]), group_idx[None, :], BLOCK_G),
            axis=1,
        )
        kept = tl.where(group_idx[None, :] == pick[:, None], 1, kept)
    kept_cols = tl.zeros_like(key).to(tl.int32)
    for g in tl.static_range(NUM_GROUPS):
        group_kept = tl.sum(tl.where(group_idx[None, :] == g, kept, 0), axis=1)
        kept_cols = tl.where((group_of_col == g)[None, :] & (group_kept > 0)[:, None], 1, kept_cols)
    return kept_cols


@triton.jit
def routing_kernel(
    logits_ptr, bias_ptr, weights_ptr, ids_ptr,
    num_tokens, num_experts, logits_row_stride, routed_scaling_factor,
    TOP_K: tl.constexpr, SIGMOID: tl.constexpr, HAS_BIAS: tl.constexpr,
    RENORMALIZE: tl.constexpr, GROUPED: tl.constexpr, NUM_GROUPS: tl.constexpr,
    GROUP_SIZE: tl.constexpr, TOPK_GROUP: tl.constexpr, BLOCK_G: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < num_tokens
    col_ok = cols < num_experts
    tile_ok = row_ok[:, None] & col_ok[None, :]
    x = tl.load(
        logits_ptr + rows.to(tl.int64)[:, None] * logits_row_stride + cols[None, :],
        mask=tile_ok,
        other=float("-inf"),
    ).to(tl.float32)
    scores = _expert_scores(x, row_ok, col_ok, SIGMOID)
    finite = (scores == scores) & (tl.abs(scores) < float("inf"))
    clean = tl.where(finite, scores, 0.0)
    key = scores if GROUPED else clean
    if HAS_BIAS:
        key = key + tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :]
    if GROUPED:
        key = tl.where(finite, key, float("-inf"))
    key = tl.where(key == key, key, float("-inf"))
    if GROUPED:
        kept_cols = _kept_group_columns(key, cols, col_ok, BLOCK_T, HAS_BIAS, NUM_GROUPS,
                                        GROUP_SIZE, TOPK_GROUP, BLOCK_G)  # fmt: skip
        key = tl.where(kept_cols > 0, key, float("-inf"))

    slots = tl.arange(0, BLOCK_K)
    taken = tl.zeros([BLOCK_T, BLOCK_E], tl.int32)
    topk_weights = tl.zeros([BLOCK_T, BLOCK_K], tl.float32)
    topk_ids = tl.zeros([BLOCK_T, BLOCK_K], tl.int32)
    for slot in tl.static_range(TOP_K):
        open_col = col_ok[None, :] & (taken == 0)
        best = tl.max(tl.where(open_col, key, float("-inf")), axis=1)
        pick = tl.min(tl.where(open_col & (key == best[:, None]), cols[None, :], BLOCK_E), axis=1)
        hit = cols[None, :] == pick[:, None]
        taken = tl.where(hit, 1, taken)
        weight = tl.sum(tl.where(hit, clean, 0.0), axis=1)
        topk_weights = tl.where(slots[None, :] == slot, weight[:, None], topk_weights)
        topk_ids = tl.where(slots[None, :] == slot, pick[:, None], topk_ids)

    if RENORMALIZE:
        total = tl.sum(topk_weights, axis=1)
        if GROUPED:
            topk_weights = topk_weights / (total + 1e-20)[:, None]
        else:
            topk_weights = topk_weights / tl.where(total == 0.0, 1.0, total)[:, None]
    topk_weights = topk_weights * routed_scaling_factor

    out_offsets = rows.to(tl.int64)[:, None] * TOP_K + slots[None, :]
    out_ok = row_ok[:, None] & (slots < TOP_K)[None, :]
    tl.store(weights_ptr + out_offsets, topk_weights, mask=out_ok)
    tl.store(ids_ptr + out_offsets, topk_ids.to(ids_ptr.dtype.element_ty), mask=out_ok)
