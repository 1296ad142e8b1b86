"""One fused Triton kernel for every routing function.

A program owns ``BLOCK_T`` rows, held in registers as a ``[BLOCK_T, BLOCK_G, BLOCK_GS]`` tile
(expert ``g * GROUP_SIZE + j`` at ``[:, g, j]``; plain top-k is one group of all experts) from the
load of the logits to the store of the ``k`` ids and weights.

Each key is packed with its expert index into one int64 whose order is "larger key first, then
lower index first": the float32 key's bits made order-preserving in the high word, ``2**31 - 1 -
index`` in the low word. One max-reduction then yields both the best key and the tie-break, so
a top-k round is a single reduction plus a compare; a taken expert becomes ``INT64_MIN``.
"""

from __future__ import annotations

import triton
import triton.language as tl

_TAKEN = tl.constexpr(-9223372036854775808)  # INT64_MIN: below every packed key, -inf too
_LOW_WORD = tl.constexpr(2147483647)  # 2**31 - 1


@triton.jit
def _pack(key, index):
    """int64 ordering ``(key desc, index asc)``; ``key`` float32 without NaN, never -0.0."""
    bits = (key + 0.0).to(tl.int32, bitcast=True)  # + 0.0 turns -0.0 into +0.0
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    return (ordered.to(tl.int64) << 32) | (index.to(tl.int64) * -1 + _LOW_WORD)


@triton.jit
def _unpack_key(packed):
    ordered = (packed >> 32).to(tl.int32)
    return tl.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF).to(tl.float32, bitcast=True)


@triton.jit
def _unpack_index(packed):
    return ((packed & 0xFFFFFFFF) * -1 + _LOW_WORD).to(tl.int32)


@triton.jit
def _row_max(x):
    return tl.max(tl.max(x, axis=2), axis=1)


@triton.jit
def _row_sum(x):
    return tl.sum(tl.sum(x, axis=2), axis=1)


@triton.jit
def _scores(x, row_max, row_total, SIGMOID: tl.constexpr):
    """float32 scores of logits ``x`` given their row's statistics (any shape of ``x``)."""
    if SIGMOID:
        return 1.0 / (1.0 + tl.exp(-x))
    return tl.exp(x - row_max) / row_total


@triton.jit
def _keep_best_groups(packed, group_ok, HAS_BIAS: tl.constexpr, TOPK_GROUP: tl.constexpr,
                      BLOCK_G: tl.constexpr):  # fmt: skip
    """``packed`` with the experts outside each row's ``TOPK_GROUP`` best groups set to -inf.

    A group scores its best key, or with a bias the sum of its two best keys."""
    first = tl.max(packed, axis=2)
    group_score = _unpack_key(first)
    if HAS_BIAS:
        rest = tl.where(packed == first[:, :, None], _TAKEN, packed)
        group_score = group_score + _unpack_key(tl.max(rest, axis=2))
    group_idx = tl.arange(0, BLOCK_G)[None, :]
    group_packed = tl.where(group_ok[None, :], _pack(group_score, group_idx), _TAKEN)
    kept = group_packed != group_packed  # all False, in the tile's shape
    for _ in tl.static_range(TOPK_GROUP):
        best = tl.max(group_packed, axis=1)
        hit = group_packed == best[:, None]
        kept = kept | hit
        group_packed = tl.where(hit, _TAKEN, group_packed)
    index = packed & 0xFFFFFFFF
    no_index = tl.zeros([1, 1, 1], tl.int32) + _LOW_WORD  # packs to a zero low word
    minus_inf = _pack(tl.full([1, 1, 1], float("-inf"), tl.float32), no_index)
    masked = tl.where(packed == _TAKEN, _TAKEN, minus_inf | index)
    return tl.where(kept[:, :, None], packed, masked)


@triton.jit
def routing_kernel(
    logits_ptr, bias_ptr, weights_ptr, ids_ptr,
    num_tokens, logits_row_stride, routed_scaling_factor,
    TOP_K: tl.constexpr, SIGMOID: tl.constexpr, HAS_BIAS: tl.constexpr,
    RENORMALIZE: tl.constexpr, GROUPED: tl.constexpr, NUM_GROUPS: tl.constexpr,
    GROUP_SIZE: tl.constexpr, TOPK_GROUP: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_GS: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < num_tokens
    group_ok = tl.arange(0, BLOCK_G) < NUM_GROUPS
    member_ok = tl.arange(0, BLOCK_GS) < GROUP_SIZE
    expert = tl.arange(0, BLOCK_G)[:, None] * GROUP_SIZE + tl.arange(0, BLOCK_GS)[None, :]
    expert_ok = group_ok[:, None] & member_ok[None, :]
    tile_ok = row_ok[:, None, None] & expert_ok[None, :, :]
    row_offset = rows.to(tl.int64) * logits_row_stride
    x = tl.load(logits_ptr + row_offset[:, None, None] + expert[None, :, :], mask=tile_ok,
                other=float("-inf")).to(tl.float32)  # fmt: skip

    # Softmax statistics. A NaN counts as +inf for the max, so its row's exps are NaN or 0 and
    # the total NaN: every score of a row holding a NaN or +inf is NaN (so 0), like torch.
    row_max = _row_max(tl.where(x != x, float("inf"), x))
    row_total = _row_sum(tl.where(expert_ok[None, :, :], tl.exp(x - row_max[:, None, None]), 0.0))
    scores = _scores(x, row_max[:, None, None], row_total[:, None, None], SIGMOID)
    finite = (scores == scores) & (tl.abs(scores) < float("inf"))
    key = scores if GROUPED else tl.where(finite, scores, 0.0)
    if HAS_BIAS:
        key = key + tl.load(bias_ptr + expert, mask=expert_ok, other=0.0)[None, :, :]
    key = tl.where(key == key, key, float("-inf"))
    if GROUPED:
        key = tl.where(finite, key, float("-inf"))
    packed = tl.where(expert_ok[None, :, :], _pack(key, expert[None, :, :]), _TAKEN)
    if GROUPED:
        packed = _keep_best_groups(packed, group_ok, HAS_BIAS, TOPK_GROUP, BLOCK_G)

    slots = tl.arange(0, BLOCK_K)[None, :]
    topk_ids = tl.zeros([BLOCK_T, BLOCK_K], tl.int32)
    for slot in tl.static_range(TOP_K):
        best = _row_max(packed)
        packed = tl.where(packed == best[:, None, None], _TAKEN, packed)
        topk_ids = tl.where(slots == slot, _unpack_index(best)[:, None], topk_ids)

    # Weights: the chosen experts' scores, recomputed from their logits (k loads a row, cached).
    out_ok = row_ok[:, None] & (slots < TOP_K)
    chosen = tl.load(logits_ptr + row_offset[:, None] + topk_ids, mask=out_ok, other=0.0)
    chosen_scores = _scores(chosen.to(tl.float32), row_max[:, None], row_total[:, None], SIGMOID)
    finite_chosen = (chosen_scores == chosen_scores) & (tl.abs(chosen_scores) < float("inf"))
    topk_weights = tl.where(finite_chosen & out_ok, chosen_scores, 0.0)
    if RENORMALIZE:
        total = tl.sum(topk_weights, axis=1)
        if GROUPED:
            topk_weights = topk_weights / (total + 1e-20)[:, None]
        else:
            topk_weights = topk_weights / tl.where(total == 0.0, 1.0, total)[:, None]
    topk_weights = topk_weights * routed_scaling_factor

    out_offsets = rows.to(tl.int64)[:, None] * TOP_K + slots
    tl.store(weights_ptr + out_offsets, topk_weights, mask=out_ok)
    tl.store(ids_ptr + out_offsets, topk_ids.to(ids_ptr.dtype.element_ty), mask=out_ok)
