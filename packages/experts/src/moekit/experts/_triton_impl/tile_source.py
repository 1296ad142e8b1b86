"""Where the grouped GEMMs find their tiles: the alignment pass's output, or topk_ids itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileSource:
    """Either ``moe_align_block_size``'s ``(sorted_token_ids, expert_ids,
    num_tokens_post_padded)``, or, with ``slots_from_ids``, the flat ``topk_ids`` of one or a
    few tokens (each slot its own tile) with the optional ``expert_map`` and the global expert
    count."""

    sorted_token_ids: torch.Tensor | None = None
    expert_ids: torch.Tensor | None = None
    num_tokens_post_padded: torch.Tensor | None = None
    topk_ids: torch.Tensor | None = None
    expert_map: torch.Tensor | None = None
    num_global_experts: int = 0

    @property
    def slots_from_ids(self) -> bool:
        return self.topk_ids is not None

    def num_m_tiles(self, block_m: int) -> int:
        if self.topk_ids is not None:
            return self.topk_ids.numel()
        assert self.sorted_token_ids is not None
        return -(-self.sorted_token_ids.shape[0] // block_m)

    def kernel_args(self, dummy: torch.Tensor) -> tuple:
        """``(sorted_token_ids, expert_ids, post_pad, topk_ids, expert_map, num_global,
        num_sorted)`` with ``dummy`` for the pointers the mode never reads."""
        if self.topk_ids is not None:
            expert_map = self.expert_map if self.expert_map is not None else dummy
            return (dummy, dummy, dummy, self.topk_ids, expert_map, self.num_global_experts, 0)
        assert self.sorted_token_ids is not None
        return (self.sorted_token_ids, self.expert_ids, self.num_tokens_post_padded, dummy,
                dummy, 0, self.sorted_token_ids.shape[0])  # fmt: skip
