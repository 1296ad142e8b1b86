"""The top-k sum done by GEMM2 itself, deterministically, for tiles from ``topk_ids``.

Each GEMM2 tile stores its per-slot rows as before, then counts its arrival on a per-(token,
n-tile) counter. The tile that brings a token's last local slot sums that token's ``TOP_K`` rows
in slot order, in float32, exactly as ``moe_sum`` does: which program sums varies from run to run,
the order and so the result does not. GEMM1 zeroes the counters (it runs first, in stream order),
and one extra row of GEMM2 programs writes zeros for tokens that have no local slot at all.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.experts._triton_impl.tiles import local_expert_of


def counter_block(num_counters: int, num_programs: int) -> int:
    """Counters each of GEMM1's first programs zeroes, so that ``num_programs`` cover them."""
    return max(16, triton.next_power_of_2(-(-num_counters // max(num_programs, 1))))


@triton.jit
def zero_counters(counters_ptr, num_counters, ZERO: tl.constexpr):
    """Program ``p`` of GEMM1 zeroes counters ``[p * ZERO, (p + 1) * ZERO)``; the launcher picks
    ``ZERO`` so that the grid covers them all."""
    first = tl.program_id(0) * ZERO
    if first < num_counters:
        offs = first + tl.arange(0, ZERO)
        tl.store(counters_ptr + offs, tl.zeros([ZERO], tl.int32), mask=offs < num_counters)


@triton.jit
def local_slot_count(topk_ids_ptr, expert_map_ptr, num_global_experts, tokens, token_ok,
                     HAS_MAP: tl.constexpr, TOP_K: tl.constexpr):  # fmt: skip
    """How many of each token's ``TOP_K`` slots go to a local expert (int32)."""
    count = tl.zeros(tokens.shape, tl.int32)
    for j in tl.static_range(TOP_K):  # unrolled: the loads go out together
        ids = tl.load(topk_ids_ptr + tokens * TOP_K + j, mask=token_ok, other=-1)
        local = local_expert_of(ids, expert_map_ptr, num_global_experts, HAS_MAP)
        count += (local >= 0).to(tl.int32)
    return count


@triton.jit
def store_and_sum_tokens(
    rows, c_ptr, out_ptr, counters_ptr, topk_ids_ptr, expert_map_ptr, num_global_experts,
    slots, slot_ok, expected, offs_n, n_ok, pid_n, num_n_tiles, stride_cm, stride_cn, stride_om,
    HAS_MAP: tl.constexpr, TOP_K: tl.constexpr,
):  # fmt: skip
    """Store ``rows`` (this tile's per-slot rows, already cast) at ``c[slot]``; where this tile
    brings a token's last local slot for columns ``offs_n``, write ``out[token]`` = the float32
    sum of its local slots' rows of ``c`` in slot order, cast to ``out``'s dtype. ``expected``
    is each row's ``local_slot_count``, loaded by the caller before its K loop."""
    c_cols = offs_n[None, :] * stride_cn
    tl.store(c_ptr + slots[:, None] * stride_cm + c_cols, rows,
             mask=slot_ok[:, None] & n_ok[None, :])  # fmt: skip
    tl.debug_barrier()  # all of the tile's rows are stored before any thread counts the arrival
    tokens = slots // TOP_K
    counters = counters_ptr + tokens * num_n_tiles + pid_n
    arrived = tl.atomic_add(counters, 1, mask=slot_ok, sem="acq_rel", scope="gpu")
    last = slot_ok & (arrived == expected - 1)
    tl.debug_barrier()  # the arrivals are seen before any thread reads the other tiles' rows
    if tl.sum(last.to(tl.int32), 0) > 0:
        total = tl.zeros(rows.shape, tl.float32)
        for j in tl.static_range(TOP_K):
            slot_j = tokens * TOP_K + j
            ids = tl.load(topk_ids_ptr + slot_j, mask=last, other=-1)
            keep = last & (local_expert_of(ids, expert_map_ptr, num_global_experts, HAS_MAP) >= 0)
            # .cg: straight from L2, where the other SMs' stores are
            total += tl.load(c_ptr + slot_j[:, None] * stride_cm + c_cols,
                             mask=keep[:, None] & n_ok[None, :], other=0.0,
                             cache_modifier=".cg").to(tl.float32)  # fmt: skip
        tl.store(out_ptr + tokens[:, None] * stride_om + offs_n[None, :], total,
                 mask=last[:, None] & n_ok[None, :])  # fmt: skip


@triton.jit
def zero_unrouted_tokens(out_ptr, topk_ids_ptr, expert_map_ptr, num_global_experts, num_tokens,
                         offs_n, n_ok, stride_om, HAS_MAP: tl.constexpr, TOP_K: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """Zeros in columns ``offs_n`` of ``out`` for every token none of whose slots is local."""
    for first in range(0, num_tokens, BLOCK_M):
        tokens = first + tl.arange(0, BLOCK_M)
        token_ok = tokens < num_tokens
        count = local_slot_count(topk_ids_ptr, expert_map_ptr, num_global_experts, tokens,
                                 token_ok, HAS_MAP, TOP_K)  # fmt: skip
        unrouted = token_ok & (count == 0)
        tl.store(out_ptr + tokens[:, None] * stride_om + offs_n[None, :],
                 tl.zeros([BLOCK_M, BLOCK_N], out_ptr.dtype.element_ty),
                 mask=unrouted[:, None] & n_ok[None, :])  # fmt: skip
