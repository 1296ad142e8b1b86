"""``AllToAllBatchedPrepareAndFinalize``: the all-to-all dispatch feeding batched experts
(``[E_local, max_tokens, K]`` per rank), for kernels that want a fixed shape per expert."""

from __future__ import annotations

import torch
import torch.distributed as dist

from moekit.experts._checks import check_int
from moekit.experts.distributed.all_to_all import AllToAllPrepareAndFinalize
from moekit.experts.modular_kernel import FusedMoEActivationFormat
from moekit.experts.prepare_finalize import BatchedPrepareAndFinalize


class AllToAllBatchedPrepareAndFinalize(AllToAllPrepareAndFinalize):
    """Tokens travel as in :class:`AllToAllPrepareAndFinalize`; the receiving rank then places
    them per local expert in a zeroed ``[E_local, max_num_tokens_per_rank * world_size, K]``
    (rows in arrival order), runs batched experts on it, weights and reduces each token's local
    slots, and sends the partial sums back.

    Args:
        group: the expert-parallel process group (``None``: the default group).
        expert_owner: int ``[global_num_experts]``, the rank holding each expert.
        max_num_tokens_per_rank: the most tokens any rank passes to one forward. A local
            expert then receives at most ``max_num_tokens_per_rank * world_size`` rows, which
            bounds the batched buffer.
        num_local_experts: experts on this rank.

    Raises:
        TypeError: ``max_num_tokens_per_rank`` not an int.
        ValueError: ``max_num_tokens_per_rank < 1``, or a forward with more than
            ``max_num_tokens_per_rank`` tokens (checked before any collective; the other ranks
            then stop at the group's timeout).
    """

    def __init__(self, group: dist.ProcessGroup | None, expert_owner: torch.Tensor,
                 max_num_tokens_per_rank: int, num_local_experts: int) -> None:  # fmt: skip
        super().__init__(group, expert_owner)
        check_int(max_num_tokens_per_rank, "max_num_tokens_per_rank", 1)
        self.max_tokens_per_rank = max_num_tokens_per_rank
        self.batched = BatchedPrepareAndFinalize(max_num_tokens_per_rank * self.world_size,
                                                 num_local_experts, self.world_size, self.rank)  # fmt: skip

    @property
    def activation_format(self) -> FusedMoEActivationFormat:
        return FusedMoEActivationFormat.BatchedExperts

    def max_num_tokens_per_rank(self) -> int:
        return self.max_tokens_per_rank

    def prepare(self, a1, topk_weights, topk_ids, num_experts, expert_map,
                apply_router_weight_on_input, quant_config):  # fmt: skip
        if a1.shape[0] > self.max_tokens_per_rank:
            raise ValueError(f"{a1.shape[0]} tokens exceed max_num_tokens_per_rank="
                             f"{self.max_tokens_per_rank}")  # fmt: skip
        x, _, _, ids, weights = super().prepare(a1, topk_weights, topk_ids, num_experts,
                                                expert_map, apply_router_weight_on_input,
                                                quant_config)  # fmt: skip
        # the router weight (top_k == 1) was applied before sending: not again here
        batched, scale, meta, _, _ = self.batched.prepare(x, weights, ids, num_experts,
                                                          expert_map, False, quant_config)  # fmt: skip
        return batched, scale, meta, ids, weights

    def prepare_async(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        result = self.prepare(*args, **kwargs)
        return (lambda: None), (lambda: result)

    def finalize(self, output, fused_expert_output, topk_weights, topk_ids,
                 apply_router_weight_on_input, weight_and_reduce_impl):  # fmt: skip
        rows = topk_ids.shape[0]
        partial = torch.empty((rows, fused_expert_output.shape[-1]),
                              dtype=fused_expert_output.dtype, device=fused_expert_output.device)  # fmt: skip
        if rows:
            self.batched.finalize(partial, fused_expert_output, topk_weights, topk_ids,
                                  apply_router_weight_on_input, weight_and_reduce_impl)  # fmt: skip
        dispatch = self._dispatch
        if dispatch is None:
            raise RuntimeError("finalize was called before prepare")
        back, _ = self._exchange(partial, len(dispatch.token_of_row), dispatch.send_splits,
                                 dispatch.recv_splits, False)  # fmt: skip
        self._combine(output, back, dispatch)
        self._dispatch = None

    def finalize_async(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.finalize(*args, **kwargs)
        return (lambda: None), (lambda: None)
