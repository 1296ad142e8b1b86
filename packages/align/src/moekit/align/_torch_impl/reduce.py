"""Torch path of ``moe_sum`` and ``count_expert_num_tokens``."""

from __future__ import annotations

import torch

from moekit.align._torch_impl.block_align import bin_counts


def local_slot_mask(topk_ids: torch.Tensor, expert_map: torch.Tensor | None) -> torch.Tensor:
    """True where a slot's id is ``>= 0`` and, with a map, maps to a local expert."""
    ids = topk_ids.long()
    keep = ids >= 0
    if expert_map is not None:
        keep &= ids < expert_map.numel()
        keep &= expert_map.long()[torch.where(keep, ids, 0)] >= 0
    return keep


def moe_sum(
    input: torch.Tensor,
    output: torch.Tensor,
    topk_ids: torch.Tensor | None,
    expert_map: torch.Tensor | None,
) -> torch.Tensor:
    values = input.float()
    if topk_ids is not None:
        keep = local_slot_mask(topk_ids, expert_map).unsqueeze(-1)
        values = torch.where(keep, values, 0.0)
    output.copy_(values.sum(dim=1))
    return output


def count_expert_num_tokens(
    topk_ids: torch.Tensor, num_local_experts: int, expert_map: torch.Tensor | None
) -> torch.Tensor:
    ids = topk_ids.reshape(-1).long()
    if expert_map is not None:
        in_map = (ids >= 0) & (ids < expert_map.numel())
        ids = torch.where(in_map, expert_map.long()[torch.where(in_map, ids, 0)], -1)
    valid = (ids >= 0) & (ids < num_local_experts)
    bins = torch.where(valid, ids, num_local_experts)
    return bin_counts(bins, num_local_experts).to(torch.int32)
