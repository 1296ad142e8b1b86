"""How the experts' per-slot outputs become one row per token (the ``finalize`` step's math)."""

from __future__ import annotations

import abc

import torch


class TopKWeightAndReduce(abc.ABC):
    """Weights and reduces ``fused_expert_output`` into ``output [M, K]`` (or returns a new
    tensor when ``output`` is None)."""

    @abc.abstractmethod
    def apply(self, output: torch.Tensor | None, fused_expert_output: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              apply_router_weight_on_input: bool) -> torch.Tensor:  # fmt: skip
        """The reduced ``[M, K]`` tensor (``output`` itself when given)."""


class TopKWeightAndReduceContiguous(TopKWeightAndReduce):
    """``fused_expert_output [M, k, K]`` (or ``[M*k, K]``) times the routed weights (unless they
    were applied on the input), summed over ``k`` in float32."""

    def apply(self, output, fused_expert_output, topk_weights, topk_ids,
              apply_router_weight_on_input):  # fmt: skip
        num_tokens, top_k = topk_ids.shape
        per_slot = fused_expert_output.reshape(num_tokens, top_k, -1).float()
        if not apply_router_weight_on_input:
            per_slot = per_slot * topk_weights.reshape(num_tokens, top_k, 1).float()
        reduced = per_slot.sum(dim=1)
        if output is None:
            return reduced.to(fused_expert_output.dtype)
        output.copy_(reduced)
        return output


class TopKWeightAndReduceNoOP(TopKWeightAndReduce):
    """The experts already weighted and reduced: copy unless it is the same tensor."""

    def apply(self, output, fused_expert_output, topk_weights, topk_ids,
              apply_router_weight_on_input):  # fmt: skip
        if output is None or output.data_ptr() == fused_expert_output.data_ptr():
            return fused_expert_output
        output.copy_(fused_expert_output)
        return output


class TopKWeightAndReduceDelegate(TopKWeightAndReduce):
    """A placeholder: the prepare/finalize object replaces it with its own choice."""

    def apply(self, output, fused_expert_output, topk_weights, topk_ids,
              apply_router_weight_on_input):  # fmt: skip
        raise RuntimeError(
            "TopKWeightAndReduceDelegate must be replaced by the prepare/finalize object's own "
            "weight-and-reduce before it is applied"
        )


class TopKWeightAndReduceNaiveBatched(TopKWeightAndReduce):
    """Batched ``[E_local, max_tokens, K]`` back to ``[M, K]``.

    A token's row inside an expert is its running rank among that expert's tokens in token order
    (how ``BatchedPrepareAndFinalize`` scattered it); experts not on rank ``rank`` (``expert_map``
    given at construction maps global -> local or -1) contribute nothing. Weighted scatter-add in
    float32."""

    def __init__(self, rank: int = 0, expert_map: torch.Tensor | None = None,
                 num_local_experts: int | None = None) -> None:  # fmt: skip
        self.rank = rank
        self.expert_map = expert_map
        self.num_local_experts = num_local_experts

    def apply(self, output, fused_expert_output, topk_weights, topk_ids,
              apply_router_weight_on_input):  # fmt: skip
        from moekit.experts._batched import batched_rows

        num_tokens = topk_ids.shape[0]
        num_local, _, hidden = fused_expert_output.shape
        local, row = batched_rows(topk_ids, self.expert_map, num_local)
        placed = local >= 0
        values = fused_expert_output[local.clamp(min=0), row.clamp(min=0)].float()
        if not apply_router_weight_on_input:
            values = values * topk_weights.float()[..., None]
        values = torch.where(placed[..., None], values, 0.0)  # unplaced rows may hold NaN
        reduced = values.sum(dim=1)
        if output is None:
            return reduced.to(fused_expert_output.dtype)
        output.copy_(reduced.reshape(num_tokens, hidden))
        return output
