"""Experts in plain torch: the baseline every benchmark compares against, and the CPU path."""

from __future__ import annotations

import torch

from moekit.experts.activation import apply_activation
from moekit.experts.modular_kernel import FusedMoEActivationFormat, FusedMoEExpertsModular
from moekit.experts.topk_weight_and_reduce import (
    TopKWeightAndReduceDelegate,
    TopKWeightAndReduceNoOP,
)


def grouped_mm_available(a: torch.Tensor, weights: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` can run ``a [rows, K] @ weights[e].T`` (bf16 on a GPU that
    has it, rows of both operands 16-byte aligned: K and N multiples of 8)."""
    return (
        hasattr(torch, "_grouped_mm")
        and a.is_cuda
        and a.dtype == torch.bfloat16
        and a.shape[1] % 8 == 0
        and weights.shape[1] % 8 == 0
    )


def grouped_linear(rows: torch.Tensor, weights: torch.Tensor, counts: torch.Tensor,
                   bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """``rows`` sorted by expert (``counts[e]`` rows for expert ``e``) times ``weights[e].T``,
    plus ``bias[e]``: ``torch._grouped_mm`` where available, else a loop over experts."""
    if grouped_mm_available(rows, weights):
        offsets = counts.cumsum(0).to(torch.int32)
        out = torch._grouped_mm(rows, weights.transpose(1, 2), offs=offsets)
    else:
        out = rows.new_empty((rows.shape[0], weights.shape[1]))
        start = 0
        for expert, count in enumerate(counts.tolist()):
            out[start : start + count] = rows[start : start + count] @ weights[expert].T
            start += count
    if bias is not None:
        expert_of_row = torch.repeat_interleave(torch.arange(len(counts), device=rows.device),
                                                counts)  # fmt: skip
        out = out + bias[expert_of_row].to(out.dtype)
    return out


class TorchExperts(FusedMoEExpertsModular):
    """Standard format: sort the slots by local expert, two grouped linears with the activation
    between, weight, scatter back and sum over ``k`` (float32). Output already reduced."""

    @classmethod
    def activation_format(cls) -> FusedMoEActivationFormat:
        return FusedMoEActivationFormat.Standard

    def workspace_shapes(self, M, N, K, topk, global_num_experts, local_num_experts,
                         expert_tokens_meta, activation):  # fmt: skip
        return (0,), (0,), (M, K)  # torch allocates its own intermediates

    def finalize_weight_and_reduce_impl(self):
        return TopKWeightAndReduceNoOP()

    def apply(self, output, hidden_states, w1, w2, topk_weights, topk_ids, activation,
              global_num_experts, expert_map, a1q_scale, a2_scale, workspace13, workspace2,
              expert_tokens_meta, apply_router_weight_on_input):  # fmt: skip
        num_local = w1.shape[0]
        num_tokens, top_k = topk_ids.shape
        ids = topk_ids.reshape(-1).long()
        in_range = (ids >= 0) & (ids < global_num_experts)
        local = ids.clamp(0, global_num_experts - 1)
        if expert_map is not None:
            local = expert_map.long()[local]
        local = torch.where(in_range & (local >= 0), local, num_local)  # num_local: dropped
        order = torch.sort(local, stable=True).indices
        counts = torch.bincount(local, minlength=num_local + 1)[:num_local]
        kept = order[: int(counts.sum())]
        rows = hidden_states[kept // top_k]
        quant = self.quant_config
        hidden = grouped_linear(rows, w1, counts, quant.w1_bias)
        hidden = apply_activation(hidden, activation)
        out = grouped_linear(hidden, w2, counts, quant.w2_bias).float()
        if not apply_router_weight_on_input:
            out = out * topk_weights.reshape(-1)[kept].float()[:, None]
        per_slot = out.new_zeros((num_tokens * top_k, out.shape[1]))
        per_slot[kept] = out
        output.copy_(per_slot.view(num_tokens, top_k, output.shape[-1]).sum(dim=1))


class NaiveBatchedExperts(FusedMoEExpertsModular):
    """Batched format, a torch loop over local experts on their valid rows. Weighting and
    reduction are the prepare/finalize's (``Delegate``)."""

    @classmethod
    def activation_format(cls) -> FusedMoEActivationFormat:
        return FusedMoEActivationFormat.BatchedExperts

    def supports_expert_map(self) -> bool:
        return False

    def workspace_shapes(self, M, N, K, topk, global_num_experts, local_num_experts,
                         expert_tokens_meta, activation):  # fmt: skip
        rows = self.max_num_tokens * self.num_dispatchers
        return (0,), (0,), (local_num_experts, rows, K)

    def finalize_weight_and_reduce_impl(self):
        return TopKWeightAndReduceDelegate()

    def apply(self, output, hidden_states, w1, w2, topk_weights, topk_ids, activation,
              global_num_experts, expert_map, a1q_scale, a2_scale, workspace13, workspace2,
              expert_tokens_meta, apply_router_weight_on_input):  # fmt: skip
        output.zero_()
        quant = self.quant_config
        counts = expert_tokens_meta.expert_num_tokens_cpu
        if counts is None:
            counts = expert_tokens_meta.expert_num_tokens.cpu()
        for expert, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            x = hidden_states[expert, :count]
            hidden = x @ w1[expert].T
            if quant.w1_bias is not None:
                hidden = hidden + quant.w1_bias[expert].to(hidden.dtype)
            hidden = apply_activation(hidden, activation)
            out = hidden @ w2[expert].T
            if quant.w2_bias is not None:
                out = out + quant.w2_bias[expert].to(out.dtype)
            output[expert, :count] = out
