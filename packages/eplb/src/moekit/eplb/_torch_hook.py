"""The routing hook in plain torch: no host syncs, so it can run inside a CUDA graph."""

from __future__ import annotations

import torch

HASH_MULTIPLIER = 2654435769


def map_to_physical_torch(topk_ids: torch.Tensor, l2p: torch.Tensor, count: torch.Tensor,
                          expert_load: torch.Tensor | None, num_valid_tokens: int) -> torch.Tensor:  # fmt: skip
    top_k = topk_ids.shape[1]
    flat = topk_ids.reshape(-1).to(torch.int64)
    valid = (flat >= 0) & (flat < l2p.shape[0])
    expert = torch.where(valid, flat, 0)
    replicas = count.to(torch.int64)[expert].clamp_min(1)
    token = torch.arange(flat.numel(), device=flat.device) // top_k
    replica = ((token * HASH_MULTIPLIER) & 0xFFFFFFFF) % replicas
    physical = torch.where(valid, l2p.to(torch.int64)[expert, replica], -1)
    if expert_load is not None:
        record = valid & (token < num_valid_tokens) & (physical >= 0)
        expert_load.index_add_(0, torch.where(record, physical, 0), record.to(expert_load.dtype))
    return physical.to(topk_ids.dtype).view_as(topk_ids)
