"""GEMM2 with its K loop split over several programs per tile, summed in a fixed order.

Where a decode call's GEMM2 has few, long tiles (Mixtral's 8 experts: a few hundred tiles of
thousands of K steps), the last wave of programs leaves most multiprocessors idle. Splitting each
tile's K range over ``SPLIT_K`` programs gives the scheduler shorter pieces. Each program stores
its float32 partial product; the one that arrives last at the tile's counter adds all of them in
split order, ``((p0 + p1) + p2) + ...``, then finishes the tile as an unsplit program would. Which
program adds varies from run to run; the order, and so the result, does not. GEMM1 zeroes the
counters (it runs first, in stream order); the partials need no initial value.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def split_k_range(split, K, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """``[k_lo, k_hi)``: split ``split``'s share of ``K``, whole ``BLOCK_K`` steps each (the last
    may be shorter or empty)."""
    k_chunk = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = split * k_chunk
    return k_lo, tl.minimum(K, k_lo + k_chunk)


@triton.jit
def partial_offsets(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    return tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]


@triton.jit
def store_partial(acc, partials_ptr, tile, split, SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr):  # fmt: skip
    """Store this split's float32 ``acc [BLOCK_M, BLOCK_N]`` in the tile's slot of the
    partials."""
    first = (tile.to(tl.int64) * SPLIT_K + split) * (BLOCK_M * BLOCK_N)
    tl.store(partials_ptr + first + partial_offsets(BLOCK_M, BLOCK_N), acc)


@triton.jit
def arrive(counters_ptr, tile):
    """Count this split's arrival at the tile; how many had arrived before it. Every store of the
    program comes first (the barrier), and the other splits' stores are seen after it
    (acquire-release at GPU scope)."""
    tl.debug_barrier()
    arrived = tl.atomic_add(counters_ptr + tile, 1, sem="acq_rel", scope="gpu")
    tl.debug_barrier()
    return arrived


@triton.jit
def summed_partials(partials_ptr, tile, SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr):  # fmt: skip
    """The float32 sum of the tile's ``SPLIT_K`` partials, in split order."""
    offs = partial_offsets(BLOCK_M, BLOCK_N)
    first = tile.to(tl.int64) * SPLIT_K * (BLOCK_M * BLOCK_N)
    # .cg: straight from L2, where the other multiprocessors' stores are
    total = tl.load(partials_ptr + first + offs, cache_modifier=".cg")
    for split in tl.static_range(1, SPLIT_K):
        total += tl.load(partials_ptr + first + split * (BLOCK_M * BLOCK_N) + offs,
                         cache_modifier=".cg")  # fmt: skip
    return total


def split_k_buffers(num_tiles: int, split_k: int, block_m: int, block_n: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(partials, counters)`` for a GEMM2 of ``num_tiles`` tiles split ``split_k`` ways:
    float32 partials ``[num_tiles * split_k * block_m * block_n]`` and one int32 counter per tile,
    both uninitialised (GEMM1 zeroes the counters: pass them as its ``counters``)."""
    partials = torch.empty(num_tiles * split_k * block_m * block_n, dtype=torch.float32,
                           device=device)  # fmt: skip
    return partials, torch.empty(num_tiles, dtype=torch.int32, device=device)
