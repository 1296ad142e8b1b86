"""The routing functions of ``moekit.routing`` in plain NumPy, one row at a time, as the spec reads.

Logits are taken as given (round them to the implementation's dtype first); scores are computed in
float64. Every function returns ``(topk_weights float64 [T, k], topk_ids int32 [T, k])``.
:func:`selection_keys` exposes the keys the top-k ranks, so a checker can tell a real error from
two experts whose keys differ by less than float32 rounding.
"""

from __future__ import annotations

import numpy as np

GROUPED_RENORM_EPS = 1e-20


def expert_scores(logits_row: np.ndarray, scoring_func: str) -> np.ndarray:
    """float64 scores of one row; NaN where the computation meets NaN or inf - inf."""
    x = np.asarray(logits_row, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if scoring_func == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if scoring_func != "softmax":
            raise ValueError(f"scoring_func must be softmax or sigmoid, got {scoring_func!r}")
        row_max = np.max(x)  # NaN if any logit is NaN
        exp = np.exp(x - row_max)
        return exp / np.sum(exp)


def _top_indices(key: np.ndarray, count: int) -> list[int]:
    """The ``count`` largest keys, descending, ties to the lower index (keys hold no NaN)."""
    order = sorted(range(len(key)), key=lambda e: (-key[e], e))
    return order[:count]


def _kept_groups(key: np.ndarray, num_expert_group: int, topk_group: int,
                 has_bias: bool) -> list[int]:  # fmt: skip
    group_size = len(key) // num_expert_group
    group_scores = []
    for g in range(num_expert_group):
        member_keys = sorted(key[g * group_size : (g + 1) * group_size], reverse=True)
        group_scores.append(member_keys[0] + member_keys[1] if has_bias else member_keys[0])
    return _top_indices(np.array(group_scores), topk_group)


def selection_keys(
    logits: np.ndarray,
    scoring_func: str = "softmax",
    e_score_correction_bias: np.ndarray | None = None,
    num_expert_group: int | None = None,
    topk_group: int | None = None,
) -> np.ndarray:
    """float64 ``[T, E]``: the key each expert is ranked by (``-inf`` for masked or non-finite)."""
    logits = np.asarray(logits)
    grouped = num_expert_group is not None
    keys = np.empty(logits.shape, dtype=np.float64)
    for t, row in enumerate(logits):
        scores = expert_scores(row, scoring_func)
        finite = np.isfinite(scores)
        key = scores.copy() if grouped else np.where(finite, scores, 0.0)
        if e_score_correction_bias is not None:
            key = key + np.asarray(e_score_correction_bias, dtype=np.float64)
        key[np.isnan(key) | (grouped & ~finite)] = -np.inf
        if num_expert_group is not None:
            assert topk_group is not None
            kept = _kept_groups(key, num_expert_group, topk_group,
                                e_score_correction_bias is not None)  # fmt: skip
            group_size = len(key) // num_expert_group
            in_kept_group = np.array([e // group_size in kept for e in range(len(key))])
            key[~in_kept_group] = -np.inf
        keys[t] = key
    return keys


def _route(logits, topk, renormalize, scoring_func, bias, routed_scaling_factor,
           num_expert_group, topk_group):  # fmt: skip
    logits = np.asarray(logits)
    grouped = num_expert_group is not None
    keys = selection_keys(logits, scoring_func, bias, num_expert_group, topk_group)
    num_tokens = logits.shape[0]
    weights = np.zeros((num_tokens, topk), dtype=np.float64)
    ids = np.zeros((num_tokens, topk), dtype=np.int32)
    for t in range(num_tokens):
        scores = expert_scores(logits[t], scoring_func)
        clean = np.where(np.isfinite(scores), scores, 0.0)
        chosen = _top_indices(keys[t], topk)
        ids[t] = chosen
        w = clean[chosen]
        if renormalize:
            total = w.sum()
            if grouped:
                w = w / (total + GROUPED_RENORM_EPS)
            else:
                w = w / (total if total != 0 else 1.0)
        weights[t] = w * routed_scaling_factor
    return weights, ids


def fused_topk(logits: np.ndarray, topk: int, renormalize: bool,
               scoring_func: str = "softmax") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Top-k of softmax/sigmoid scores (NaN/Inf scores count as 0)."""
    return _route(logits, topk, renormalize, scoring_func, None, 1.0, None, None)


def fused_topk_bias(
    logits: np.ndarray,
    e_score_correction_bias: np.ndarray,
    topk: int,
    renormalize: bool,
    scoring_func: str = "softmax",
    routed_scaling_factor: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``score + bias``, weighted by the unbiased score; renormalise, then scale."""
    return _route(logits, topk, renormalize, scoring_func, e_score_correction_bias,
                  routed_scaling_factor, None, None)  # fmt: skip


def grouped_topk(
    logits: np.ndarray,
    topk: int,
    renormalize: bool,
    num_expert_group: int,
    topk_group: int,
    scoring_func: str = "softmax",
    routed_scaling_factor: float = 1.0,
    e_score_correction_bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """DeepSeek-V2/V3 grouped top-k (group = top-2 sum with a bias, max without)."""
    return _route(logits, topk, renormalize, scoring_func, e_score_correction_bias,
                  routed_scaling_factor, num_expert_group, topk_group)  # fmt: skip


# --- the simulator's distributions ------------------------------------------------------------


def zipf_expert_probabilities(num_experts: int, exponent: float,
                              permutation: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Popularity of each expert under Zipf's law: the expert of rank ``r`` (1-based) gets
    ``r**-exponent`` (normalised); ``permutation[r-1]`` is the expert holding rank ``r``."""
    ranks = np.arange(1, num_experts + 1, dtype=np.float64)
    by_rank = ranks**-exponent
    by_rank /= by_rank.sum()
    order = np.arange(num_experts) if permutation is None else np.asarray(permutation)
    probabilities = np.empty(num_experts, dtype=np.float64)
    probabilities[order] = by_rank
    return probabilities


def hot_expert_probabilities(num_experts: int, hot_experts: list[int] | np.ndarray,
                             hot_share: float) -> np.ndarray:  # fmt: skip
    """``hot_share`` of the traffic split evenly over ``hot_experts``, the rest over the others."""
    hot = np.zeros(num_experts, dtype=bool)
    hot[np.asarray(hot_experts, dtype=np.int64)] = True
    probabilities = np.where(hot, hot_share / hot.sum(), 0.0)
    if (~hot).any():
        probabilities[~hot] = (1.0 - hot_share) / (~hot).sum()
    return probabilities


def sample_distinct(rng: np.random.Generator, num_tokens: int, top_k: int,
                    probabilities: np.ndarray) -> np.ndarray:  # fmt: skip
    """``int32 [T, k]``: per token, ``k`` distinct experts drawn one after another without
    replacement, each in proportion to ``probabilities`` among the experts still free."""
    ids = np.empty((num_tokens, top_k), dtype=np.int32)
    for t in range(num_tokens):
        ids[t] = rng.choice(len(probabilities), size=top_k, replace=False, p=probabilities)
    return ids


def weights_of(
    logits: np.ndarray,
    topk_ids: np.ndarray,
    renormalize: bool,
    scoring_func: str = "softmax",
    routed_scaling_factor: float = 1.0,
    grouped: bool = False,
) -> np.ndarray:
    """float64 ``[T, k]``: the weights the spec gives the experts ``topk_ids`` (whichever were
    chosen), so a choice between near-equal keys can be checked for its weights."""
    logits = np.asarray(logits)
    weights = np.zeros(np.shape(topk_ids), dtype=np.float64)
    for t, row in enumerate(np.asarray(topk_ids)):
        scores = expert_scores(logits[t], scoring_func)
        w = np.where(np.isfinite(scores), scores, 0.0)[row.astype(np.int64)]
        if renormalize:
            total = w.sum()
            w = w / (total + GROUPED_RENORM_EPS) if grouped else w / (total if total else 1.0)
        weights[t] = w * routed_scaling_factor
    return weights
