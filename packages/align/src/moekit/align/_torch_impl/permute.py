"""Torch path of ``moe_permute`` and ``moe_unpermute``."""

from __future__ import annotations

import torch

from moekit.align._torch_impl.block_align import bin_counts, layout_bins


def moe_permute(
    hidden_states: torch.Tensor,
    topk_ids: torch.Tensor,
    num_experts: int,
    expert_map: torch.Tensor | None,
    num_local_experts: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    top_k = topk_ids.shape[1]
    bins = layout_bins(topk_ids, num_experts, expert_map, map_to_local=True)
    bins = torch.where(bins < num_local_experts, bins, num_local_experts)
    permuted_idx = torch.argsort(bins, stable=True)
    inv_permuted_idx = torch.empty_like(permuted_idx)
    inv_permuted_idx[permuted_idx] = torch.arange(permuted_idx.numel(), device=bins.device)
    counts = bin_counts(bins, num_local_experts)
    offsets = torch.zeros(num_local_experts + 1, dtype=torch.int64, device=bins.device)
    offsets[1:] = torch.cumsum(counts, 0)
    permuted = hidden_states[permuted_idx // top_k]
    return permuted, offsets, inv_permuted_idx.to(torch.int32), permuted_idx.to(torch.int32)


def moe_unpermute(
    permuted: torch.Tensor,
    topk_weights: torch.Tensor,
    inv_permuted_idx: torch.Tensor,
    expert_first_token_offset: torch.Tensor,
) -> torch.Tensor:
    num_tokens, top_k = topk_weights.shape
    rows = inv_permuted_idx.long().reshape(num_tokens, top_k)
    local = rows < expert_first_token_offset[-1]
    gathered = permuted.float()[rows.clamp(max=max(permuted.shape[0] - 1, 0))]
    contributions = gathered * topk_weights.float().unsqueeze(-1)
    contributions = torch.where(local.unsqueeze(-1), contributions, 0.0)
    return contributions.sum(dim=1).to(permuted.dtype)
