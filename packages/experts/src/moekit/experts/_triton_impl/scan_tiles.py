"""Decode tiles found by scanning ``topk_ids``, with no alignment pass.

With few slots, each program of a grouped GEMM reads all of ``topk_ids`` and picks out the slots
of its own expert: the ``r``-th of them (in slot order) becomes row ``r`` of the expert's
``r // BLOCK_M``-th tile. A program owns the tiles ``first, first + step, ...`` of one expert, so
an expert with more slots than the grid planned for is still covered, only in more steps. The
rows come out in the order ``moe_align_block_size`` gives them, so the result is the same.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.tiles import local_expert_of


@triton.jit
def expert_slot_counts(topk_ids_ptr, expert_map_ptr, num_slots, num_global_experts, expert,
                       HAS_MAP: tl.constexpr, NUM_SCAN: tl.constexpr):  # fmt: skip
    """``(running, count)``: for each of the first ``NUM_SCAN`` flat slots, how many slots up to
    and including it go to local ``expert``, and how many do in all."""
    offs = tl.arange(0, NUM_SCAN)
    ids = tl.load(topk_ids_ptr + offs, mask=offs < num_slots, other=-1)
    mine = (local_expert_of(ids, expert_map_ptr, num_global_experts, HAS_MAP) == expert).to(
        tl.int32
    )
    return tl.cumsum(mine, 0), tl.sum(mine, 0)


@triton.jit
def scan_tile_slots(running, count, tile, BLOCK_M: tl.constexpr):
    """The flat slots (int64) of the expert's ``tile``-th tile and which rows are real."""
    ranks = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    # slot of the rank-r match = how many slots come before it = slots whose running count <= r
    slots = tl.sum((running[None, :] <= ranks[:, None]).to(tl.int32), 1)
    slot_ok = ranks < count
    return tl.where(slot_ok, slots, 0).to(tl.int64), slot_ok
