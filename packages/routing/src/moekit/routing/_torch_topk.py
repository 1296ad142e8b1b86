"""The torch path of the routing functions: plain tensor ops, correct on any device.

Ties go to the lower expert index through a *stable* descending sort (``torch.topk`` does not
promise an order between equal values).
"""

from __future__ import annotations

import torch

from moekit.routing._checks import RoutingProblem

GROUPED_RENORM_EPS = 1e-20


def expert_scores(logits: torch.Tensor, scoring_func: str) -> torch.Tensor:
    """float32 scores ``[T, E]``; a softmax row holding NaN or +inf, or all -inf, is all NaN."""
    x = logits.float()
    if scoring_func == "sigmoid":
        return torch.sigmoid(x)
    row_max = x.amax(dim=-1, keepdim=True)  # amax propagates NaN, like the spec's max
    exp = torch.exp(x - row_max)
    return exp / exp.sum(dim=-1, keepdim=True)


def _descending_order(key: torch.Tensor) -> torch.Tensor:
    return torch.sort(key, dim=-1, descending=True, stable=True).indices


def _kept_group_mask(key: torch.Tensor, problem: RoutingProblem) -> torch.Tensor:
    """Boolean ``[T, E]``: the experts of the ``topk_group`` best groups of each row."""
    num_tokens, num_experts = key.shape
    groups = problem.num_expert_group
    grouped_key = key.view(num_tokens, groups, num_experts // groups)
    if problem.bias is not None:
        top_two = torch.sort(grouped_key, dim=-1, descending=True).values[..., :2]
        group_score = top_two.sum(dim=-1)
    else:
        group_score = grouped_key.amax(dim=-1)
    kept_groups = _descending_order(group_score)[:, : problem.topk_group]
    group_mask = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, kept_groups, True)
    return group_mask.repeat_interleave(num_experts // groups, dim=1)


def route_torch(problem: RoutingProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """``(topk_weights float32 [T, k], topk_ids [T, k])`` of any routing problem."""
    scores = expert_scores(problem.logits, problem.scoring_func)
    finite = torch.isfinite(scores)
    clean = torch.where(finite, scores, torch.zeros_like(scores))
    grouped = problem.grouped
    key = scores if grouped else clean
    if problem.bias is not None:
        key = key + problem.bias
    neg_inf = torch.full_like(key, float("-inf"))
    key = torch.where(torch.isnan(key) | (grouped & ~finite), neg_inf, key)
    if grouped:
        key = torch.where(_kept_group_mask(key, problem), key, neg_inf)
    topk_ids = _descending_order(key)[:, : problem.top_k]
    topk_weights = torch.gather(clean, 1, topk_ids)
    if problem.renormalize:
        total = topk_weights.sum(dim=-1, keepdim=True)
        if grouped:
            topk_weights = topk_weights / (total + GROUPED_RENORM_EPS)
        else:
            topk_weights = topk_weights / torch.where(total == 0, torch.ones_like(total), total)
    if problem.routed_scaling_factor != 1.0:
        topk_weights = topk_weights * problem.routed_scaling_factor
    return topk_weights, topk_ids.to(problem.indices_type)
