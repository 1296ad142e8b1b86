"""Launch parameters of the segment-layout kernels, chosen from the problem size alone."""

from __future__ import annotations

from dataclasses import dataclass

import triton

from moekit.align._backend import interpreter_enabled

# Up to this many flat slots the layout runs as one launch (each program counts every slot).
# The thresholds and splits below come from a sweep on an H100 (top-8 of 256 experts,
# benchmarks/results/align_sweep_h100.json): fewer experts per program pays while the slots
# are few, longer chunks once they are many.
SINGLE_CHUNK_MAX_SLOTS = 2048


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
        chunk, experts_per_program = max(16, triton.next_power_of_2(numel)), 2
    elif numel <= 8192:
        chunk, experts_per_program = 1024, 4
    elif numel <= 32768:
        chunk, experts_per_program = 2048, 4
    else:
        chunk, experts_per_program = 4096, 8
    if interpreter_enabled():
        # The CPU interpreter runs programs one after another: few wide programs are far faster.
        experts_per_program = 32
    experts_per_program = min(experts_per_program, triton.next_power_of_2(num_layout_bins))
    sub = min(chunk, 4096 // experts_per_program)
    return LayoutConfig(chunk, sub, experts_per_program, num_warps=4)


def num_histogram_bins(num_layout_bins: int) -> int:
    """Histogram width: every layout bin, one for unplaced slots, one for lanes past the end."""
    return triton.next_power_of_2(num_layout_bins + 2)


def pad_tile(block_size: int) -> int:
    return max(2, triton.next_power_of_2(block_size))
