"""Tile bookkeeping shared by the grouped GEMM kernels of the standard format."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_coordinates(num_m_tiles, num_n_tiles, GROUP_M: tl.constexpr):
    """(m tile, n tile) of this program, walking ``GROUP_M`` m-tiles per column of n-tiles so
    neighbouring programs share B tiles in L2."""
    pid = tl.program_id(0)
    tiles_per_group = GROUP_M * num_n_tiles
    first_m = (pid // tiles_per_group) * GROUP_M
    group_rows = tl.minimum(num_m_tiles - first_m, GROUP_M)
    pid_m = first_m + (pid % tiles_per_group) % group_rows
    pid_n = (pid % tiles_per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def tile_slots(sorted_token_ids_ptr, pid_m, num_sorted, num_valid_slots,
               BLOCK_M: tl.constexpr):  # fmt: skip
    """The flat slots of m-tile ``pid_m`` (int64) and which of them are real (not padding)."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.load(sorted_token_ids_ptr + offs_m, mask=offs_m < num_sorted,
                    other=num_valid_slots).to(tl.int64)  # fmt: skip
    return slots, slots < num_valid_slots
