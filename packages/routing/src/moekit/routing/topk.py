"""The routing functions: top-k, top-k with a correction bias, and DeepSeek's grouped top-k.

Every function returns ``(topk_weights, topk_ids)``: ``topk_weights`` float32 ``[T, k]`` and
``topk_ids`` ``[T, k]`` (int32, or ``indices_type``), slots in descending selection score with
ties to the lower expert index. Scores are computed in float32 whatever the logits' dtype.
"""

from __future__ import annotations

import torch

from moekit.routing._backend import Backend, resolve_backend
from moekit.routing._checks import RoutingProblem, routing_problem
from moekit.routing._torch_topk import route_torch


def _route(problem: RoutingProblem, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if resolve_backend(backend, problem.logits.device) == "triton":
        from moekit.routing._triton_impl.launch import route_triton, triton_supports

        if triton_supports(problem):
            return route_triton(problem)
    return route_torch(problem)


def fused_topk(
    hidden_states: torch.Tensor | None,
    gating_output: torch.Tensor,
    topk: int,
    renormalize: bool,
    *,
    scoring_func: str = "softmax",
    indices_type: torch.dtype | None = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``topk`` experts of each token by softmax or sigmoid score.

    Args:
        hidden_states: ``[T, ...]`` (only its row count is checked; may be ``None``).
        gating_output: router logits ``[T, E]`` float16 / bfloat16 / float32.
        topk: experts per token, ``1 <= topk <= E``.
        renormalize: divide the weights by their sum (a zero sum divides by 1).
        scoring_func: ``"softmax"`` (over all ``E``, max-subtracted) or ``"sigmoid"``.
        indices_type: dtype of ``topk_ids``: ``torch.int32`` (default) or ``torch.int64``.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        ``topk_weights`` float32 ``[T, topk]`` (the scores of the chosen experts) and
        ``topk_ids`` ``[T, topk]``. NaN/Inf scores count as 0: a softmax row holding a NaN or
        +inf logit (or only -inf) scores 0 everywhere and picks experts ``0..topk-1``.

    Raises:
        TypeError: a non-tensor or non-float ``gating_output``, a bad ``indices_type``.
        ValueError: ``gating_output`` not 2-D, ``topk`` outside ``[1, E]``, an unknown
            ``scoring_func`` or ``backend``, ``hidden_states`` with another row count.
    """
    problem = routing_problem(
        hidden_states, gating_output, topk, renormalize, scoring_func, indices_type
    )
    return _route(problem, backend)


def fused_topk_bias(
    hidden_states: torch.Tensor | None,
    gating_output: torch.Tensor,
    e_score_correction_bias: torch.Tensor,
    topk: int,
    renormalize: bool,
    *,
    scoring_func: str = "softmax",
    routed_scaling_factor: float = 1.0,
    indices_type: torch.dtype | None = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k selected by ``score + e_score_correction_bias``, weighted by the unbiased score.

    The bias (float ``[E]``, on the logits' device) changes which experts are chosen, never
    their weights. Weights are renormalised (if asked; a zero sum divides by 1), *then*
    multiplied by ``routed_scaling_factor``. Other arguments, returns and errors as
    :func:`fused_topk`; a bias of the wrong shape, dtype or device is refused too.
    """
    if e_score_correction_bias is None:
        raise TypeError("e_score_correction_bias must be a torch.Tensor, got None")
    problem = routing_problem(
        hidden_states, gating_output, topk, renormalize, scoring_func, indices_type,
        bias=e_score_correction_bias, routed_scaling_factor=routed_scaling_factor,
    )  # fmt: skip
    return _route(problem, backend)


def grouped_topk(
    hidden_states: torch.Tensor | None,
    gating_output: torch.Tensor,
    topk: int,
    renormalize: bool,
    num_expert_group: int,
    topk_group: int,
    scoring_func: str = "softmax",
    routed_scaling_factor: float = 1.0,
    e_score_correction_bias: torch.Tensor | None = None,
    *,
    indices_type: torch.dtype | None = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V2/V3 routing: keep the ``topk_group`` best of ``num_expert_group`` groups,
    then the top ``topk`` experts inside them.

    The ``E`` experts form ``num_expert_group`` equal contiguous groups. A group scores the
    sum of its top two ``score + bias`` with a bias, the max ``score`` without. Experts of the
    other groups are masked to ``-inf``; top-k runs over the (biased) masked scores; the weights
    are the unbiased scores, renormalised as ``w / (sum(w) + 1e-20)`` if asked, then multiplied
    by ``routed_scaling_factor``. Non-finite scores rank after every finite one and weigh 0.
    DeepSeek-V3: ``scoring_func="sigmoid"``, a bias, ``E=256``, 8 groups, ``topk_group=4``,
    ``topk=8``, ``renormalize=True``, scale 2.5.

    Raises, besides the errors of :func:`fused_topk`:
        ValueError: ``E % num_expert_group != 0``, ``topk_group > num_expert_group``,
            ``topk`` above the experts of the kept groups, a bias with groups of one expert.
    """
    problem = routing_problem(
        hidden_states, gating_output, topk, renormalize, scoring_func, indices_type,
        bias=e_score_correction_bias, routed_scaling_factor=routed_scaling_factor,
        grouped=True, num_expert_group=num_expert_group, topk_group=topk_group,
    )  # fmt: skip
    return _route(problem, backend)
