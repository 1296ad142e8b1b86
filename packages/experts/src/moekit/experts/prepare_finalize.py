"""Prepare/finalize implementations for a single rank."""

from __future__ import annotations

import torch

from moekit.experts._batched import batched_rows
from moekit.experts.modular_kernel import (
    ExpertTokensMetadata,
    FusedMoEActivationFormat,
    FusedMoEPrepareAndFinalizeModular,
)
from moekit.experts.topk_weight_and_reduce import (
    TopKWeightAndReduceContiguous,
    TopKWeightAndReduceDelegate,
    TopKWeightAndReduceNaiveBatched,
)


class MoEPrepareAndFinalizeNoEP(FusedMoEPrepareAndFinalizeModular):
    """Standard format, one rank: tokens stay where they are. ``prepare`` scales the input by
    the routed weight when ``apply_router_weight_on_input``; ``finalize`` applies the experts'
    weight-and-reduce (``Contiguous`` if they delegate)."""

    finalizes_in_place = True

    @property
    def activation_format(self) -> FusedMoEActivationFormat:
        return FusedMoEActivationFormat.Standard

    def prepare(self, a1, topk_weights, topk_ids, num_experts, expert_map,
                apply_router_weight_on_input, quant_config):  # fmt: skip
        if apply_router_weight_on_input:
            a1 = a1 * topk_weights.to(a1.dtype)  # top_k == 1: [M, 1] broadcasts over K
        return a1, None, None, None, None

    def finalize(self, output, fused_expert_output, topk_weights, topk_ids,
                 apply_router_weight_on_input, weight_and_reduce_impl):  # fmt: skip
        if isinstance(weight_and_reduce_impl, TopKWeightAndReduceDelegate):
            weight_and_reduce_impl = TopKWeightAndReduceContiguous()
        weight_and_reduce_impl.apply(output, fused_expert_output, topk_weights, topk_ids,
                                     apply_router_weight_on_input)  # fmt: skip


class BatchedPrepareAndFinalize(FusedMoEPrepareAndFinalizeModular):
    """Batched format, one rank: scatter each slot's token into a zeroed
    ``[E_local, max_num_tokens, K]`` (rows in token order per expert); ``expert_num_tokens`` per
    local expert. More than ``max_num_tokens`` slots for one expert is a ``ValueError``."""

    def __init__(self, max_num_tokens: int, num_local_experts: int, num_dispatchers: int = 1,
                 rank: int = 0) -> None:  # fmt: skip
        if max_num_tokens < 1 or num_local_experts < 1 or num_dispatchers < 1:
            raise ValueError("max_num_tokens, num_local_experts and num_dispatchers must be >= 1")
        self.max_num_tokens = max_num_tokens
        self.num_local_experts = num_local_experts
        self._num_dispatchers = num_dispatchers
        self.rank = rank
        self._expert_map: torch.Tensor | None = None

    @property
    def activation_format(self) -> FusedMoEActivationFormat:
        return FusedMoEActivationFormat.BatchedExperts

    def max_num_tokens_per_rank(self) -> int:
        return self.max_num_tokens

    def num_dispatchers(self) -> int:
        return self._num_dispatchers

    def prepare(self, a1, topk_weights, topk_ids, num_experts, expert_map,
                apply_router_weight_on_input, quant_config):  # fmt: skip
        self._expert_map = expert_map
        local, row = batched_rows(topk_ids, expert_map, self.num_local_experts)
        placed = local >= 0
        counts = torch.bincount(local[placed], minlength=self.num_local_experts).to(torch.int32)
        if counts.numel() and int(counts.max()) > self.max_num_tokens:
            raise ValueError(
                f"an expert received {int(counts.max())} slots, above "
                f"max_num_tokens={self.max_num_tokens}"
            )
        if apply_router_weight_on_input:
            a1 = a1 * topk_weights.to(a1.dtype)
        batched = a1.new_zeros((self.num_local_experts, self.max_num_tokens, a1.shape[1]))
        token = torch.arange(topk_ids.shape[0], device=a1.device)[:, None].expand_as(local)
        batched[local[placed], row[placed]] = a1[token[placed]]
        return batched, None, ExpertTokensMetadata(counts), None, None

    def finalize(self, output, fused_expert_output, topk_weights, topk_ids,
                 apply_router_weight_on_input, weight_and_reduce_impl):  # fmt: skip
        if isinstance(weight_and_reduce_impl, TopKWeightAndReduceDelegate):
            weight_and_reduce_impl = TopKWeightAndReduceNaiveBatched(
                self.rank, self._expert_map, self.num_local_experts
            )
        weight_and_reduce_impl.apply(output, fused_expert_output, topk_weights, topk_ids,
                                     apply_router_weight_on_input)  # fmt: skip
