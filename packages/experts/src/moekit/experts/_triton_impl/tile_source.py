"""Where the grouped GEMMs find their tiles: the alignment pass's output, or ``topk_ids`` itself
(one token: each slot its own tile; decode: each program scans the ids for its expert's slots)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TileSource:
    """Either ``moe_align_block_size``'s ``(sorted_token_ids, expert_ids,
    num_tokens_post_padded)``, or the flat ``topk_ids`` with the optional ``expert_map`` and the
    global expert count: with ``scan_experts == 0`` (``slots_from_ids``, one token) each slot is
    its own tile; with ``scan_experts`` local experts (``scans_ids``) each of the
    ``scan_experts * scan_m_tiles`` m-tiles of the grid scans the ids for its expert's slots (see
    ``scan_tiles``)."""

    sorted_token_ids: torch.Tensor | None = None
    expert_ids: torch.Tensor | None = None
    num_tokens_post_padded: torch.Tensor | None = None
    topk_ids: torch.Tensor | None = None
    expert_map: torch.Tensor | None = None
    num_global_experts: int = 0
    scan_experts: int = 0
    scan_m_tiles: int = 1

    @property
    def slots_from_ids(self) -> bool:
        return self.topk_ids is not None and not self.scan_experts

    @property
    def scans_ids(self) -> bool:
        return self.topk_ids is not None and self.scan_experts > 0

    def num_m_tiles(self, block_m: int) -> int:
        if self.topk_ids is not None:
            return self.scan_experts * self.scan_m_tiles or self.topk_ids.numel()
        assert self.sorted_token_ids is not None
        return -(-self.sorted_token_ids.shape[0] // block_m)

    def kernel_args(self, dummy: torch.Tensor) -> tuple:
        """``(sorted_token_ids, expert_ids, post_pad, topk_ids, expert_map, num_global,
        scan_experts, scan_m_tiles, num_sorted)`` with ``dummy`` for the pointers the mode never
        reads."""
        if self.topk_ids is not None:
            expert_map = self.expert_map if self.expert_map is not None else dummy
            return (dummy, dummy, dummy, self.topk_ids, expert_map, self.num_global_experts,
                    self.scan_experts, self.scan_m_tiles, 0)  # fmt: skip
        assert self.sorted_token_ids is not None
        return (self.sorted_token_ids, self.expert_ids, self.num_tokens_post_padded, dummy,
                dummy, 0, 0, 1, self.sorted_token_ids.shape[0])  # fmt: skip

    def kernel_flags(self) -> dict[str, Any]:
        """The compile-time arguments that select the mode (this module imports without Triton:
        the torch path uses it too)."""
        num_ids = self.topk_ids.numel() if self.topk_ids is not None else 0
        return dict(SLOTS_FROM_IDS=self.slots_from_ids, SCAN_IDS=self.scans_ids,
                    NUM_SCAN=1 << max(4, (num_ids - 1).bit_length()),  # a power of 2, >= 16
                    HAS_MAP=self.expert_map is not None)  # fmt: skip
