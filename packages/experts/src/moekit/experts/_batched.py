"""Where each slot lands in the batched ``[E_local, max_tokens, K]`` layout."""

from __future__ import annotations

import torch


def batched_rows(topk_ids: torch.Tensor, expert_map: torch.Tensor | None,
                 num_local_experts: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(local expert, row)`` per slot ``[M, k]`` (int64; ``-1`` for a slot not on this rank):
    the row is the slot's rank among the expert's slots in flat token order."""
    ids = topk_ids.long()
    valid = ids >= 0
    if expert_map is not None:
        in_map = valid & (ids < expert_map.shape[0])
        local = torch.where(in_map, expert_map.long()[ids.clamp(0, expert_map.shape[0] - 1)], -1)
    else:
        local = torch.where(valid & (ids < num_local_experts), ids, -1)
    flat = local.reshape(-1)
    one_hot = (
        torch.nn.functional.one_hot(flat.clamp(min=0), num_local_experts) * (flat >= 0)[:, None]
    )
    running = one_hot.cumsum(dim=0) - one_hot
    row = (running * one_hot).sum(dim=1)
    row = torch.where(flat >= 0, row, -1)
    return local, row.reshape(local.shape)
