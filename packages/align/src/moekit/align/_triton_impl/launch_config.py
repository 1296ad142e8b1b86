"""Launch parameters of the segment-layout kernels, chosen from the problem size alone."""

from __future__ import annotations

from dataclasses import dataclass

import triton

# Up to this many flat slots the layout runs as one launch (each program counts every slot).
SINGLE_CHUNK_MAX_SLOTS = 4096
MULTI_CHUNK_SLOTS = 4096


@dataclass(frozen=True)
class LayoutConfig:
    chunk: int
    sub: int
    experts_per_program: int
    num_warps: int

    def num_chunks(self, numel: int) -> int:
        return max(1, triton.cdiv(numel, self.chunk))


def layout_config(numel: int, num_layout_bins: int) -> LayoutConfig:
    """Chunking and work split for ``numel`` slots over ``num_layout_bins`` segments."""
    if numel <= SINGLE_CHUNK_MAX_SLOTS:
        chunk = max(16, triton.next_power_of_2(numel))
    else:
        chunk = MULTI_CHUNK_SLOTS
    experts_per_program = min(8, triton.next_power_of_2(num_layout_bins))
    sub = min(chunk, 4096 // experts_per_program)
    return LayoutConfig(chunk, sub, experts_per_program, num_warps=4)


def num_histogram_bins(num_layout_bins: int) -> int:
    """Histogram width: every layout bin, one for unplaced slots, one for lanes past the end."""
    return triton.next_power_of_2(num_layout_bins + 2)


def pad_tile(block_size: int) -> int:
    return max(2, triton.next_power_of_2(block_size))
