"""The segment layout for many slots: each chunk of slots sorted by expert in one program.

``place_segments_kernel`` gives each program a group of experts and one chunk, so every slot is
read and compared once per group of experts: its cost grows with the number of experts. Here
each program owns one chunk of ``CHUNK`` slots and all experts:

1. ``chunk_histogram_kernel`` (shared): per-chunk expert counts.
2. ``chunk_prefix_kernel``: for each expert, the slots of the chunks before each chunk
   (an exclusive scan down the chunks, in place), and the totals in the row after the last.
3. ``place_sorted_chunk_kernel``: sorts its chunk's slots by (expert, slot), so each expert's
   slots lie side by side in ascending slot order, and writes sorted position ``i`` of
   expert ``e`` to ``segment_start[e] + before[e] + i - first position of e in the chunk``.

Every output element is written once; no atomics, so the result is deterministic and equal to
``place_segments_kernel``'s.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.align._triton_impl.programmatic_launch import wait_for_prior_kernel
from moekit.align._triton_impl.segment_kernels import (
    fill_unused_tail,
    slot_bins,
    write_segment_ends,
)


@triton.jit
def chunk_prefix_kernel(
    chunk_hist_ptr,
    num_chunks,
    NUM_BINS: tl.constexpr,
    SCAN_CHUNKS: tl.constexpr,
    SCAN_BINS: tl.constexpr,
    PROGRAMMATIC: tl.constexpr,
):
    """``chunk_hist [num_chunks + 1, NUM_BINS]``: rows ``0..num_chunks-1`` hold per-chunk counts
    on entry and, on exit, the counts of the chunks before each; row ``num_chunks`` the totals.
    Program ``p`` scans bins ``[p * SCAN_BINS, (p + 1) * SCAN_BINS)``."""
    wait_for_prior_kernel(PROGRAMMATIC, PROGRAMMATIC)
    bins = tl.program_id(0) * SCAN_BINS + tl.arange(0, SCAN_BINS)
    rows = tl.arange(0, SCAN_CHUNKS)
    carried = tl.zeros([SCAN_BINS], dtype=tl.int32)
    for first in range(0, num_chunks, SCAN_CHUNKS):
        chunks = first + rows
        ptrs = chunk_hist_ptr + chunks[:, None] * NUM_BINS + bins[None, :]
        in_range = (chunks < num_chunks)[:, None]
        counts = tl.load(ptrs, mask=in_range, other=0)
        tl.store(ptrs, tl.cumsum(counts, 0) - counts + carried[None, :], mask=in_range)
        carried += tl.sum(counts, 0)
    tl.store(chunk_hist_ptr + num_chunks * NUM_BINS + bins, carried)


@triton.jit
def place_sorted_chunk_kernel(
    topk_ids_ptr,
    expert_map_ptr,
    chunk_prefix_ptr,
    sorted_ids_ptr,
    expert_ids_ptr,
    post_pad_ptr,
    scatter_idx_ptr,
    offsets_ptr,
    numel,
    num_experts,
    block_size,
    length,
    num_blocks,
    num_chunks,
    MAP_TO_LOCAL: tl.constexpr,
    MAP_BLOCK_IDS: tl.constexpr,
    PLACE_UNMAPPED_LAST: tl.constexpr,
    WRITE_EXPERT_IDS: tl.constexpr,
    WRITE_SCATTER: tl.constexpr,
    WRITE_OFFSETS: tl.constexpr,
    CHUNK: tl.constexpr,
    NUM_BINS: tl.constexpr,
    EXPERTS_PER_PROGRAM: tl.constexpr,
    PAD_TILE: tl.constexpr,
    FILL_TILE: tl.constexpr,
    PROGRAMMATIC: tl.constexpr,
):
    """Program ``chunk`` places the slots of its chunk; the programs share the experts' padding,
    block ids and offsets (groups of ``EXPERTS_PER_PROGRAM``) and the fill past the segments."""
    wait_for_prior_kernel(PROGRAMMATIC, PROGRAMMATIC)
    chunk = tl.program_id(0)
    if PLACE_UNMAPPED_LAST:
        num_layout = num_experts + 1
    else:
        num_layout = num_experts

    bin_ids = tl.arange(0, NUM_BINS)
    totals = tl.load(chunk_prefix_ptr + num_chunks * NUM_BINS + bin_ids)
    totals = tl.where(bin_ids < num_layout, totals, 0)
    padded = (totals + block_size - 1) // block_size * block_size
    padded_start = tl.cumsum(padded, 0) - padded
    before = tl.load(chunk_prefix_ptr + chunk * NUM_BINS + bin_ids)

    lanes = tl.arange(0, CHUNK)
    bins = slot_bins(
        topk_ids_ptr,
        expert_map_ptr,
        chunk * CHUNK + lanes,
        numel,
        num_experts,
        num_experts,
        MAP_TO_LOCAL,
    )
    in_chunk = tl.histogram(bins, NUM_BINS)
    first_in_chunk = tl.cumsum(in_chunk, 0) - in_chunk
    # Lanes past numel sort last (their bin is the largest); keys are unique, so no tie.
    keys = tl.sort(bins * CHUNK + lanes)
    sorted_bins = keys // CHUNK
    slots = chunk * CHUNK + keys % CHUNK
    base = padded_start + before - first_in_chunk
    destination = tl.gather(base, sorted_bins, 0) + lanes
    placed = sorted_bins < num_layout
    tl.store(sorted_ids_ptr + destination, slots, mask=placed)
    if WRITE_SCATTER:
        tl.store(scatter_idx_ptr + slots, destination, mask=placed)
        if not PLACE_UNMAPPED_LAST:
            tl.store(scatter_idx_ptr + slots, -1, mask=sorted_bins == num_experts)

    num_groups = tl.cdiv(num_layout, EXPERTS_PER_PROGRAM)
    for group in range(chunk, num_groups, num_chunks):
        experts = group * EXPERTS_PER_PROGRAM + tl.arange(0, EXPERTS_PER_PROGRAM)
        write_segment_ends(
            sorted_ids_ptr,
            expert_ids_ptr,
            offsets_ptr,
            expert_map_ptr,
            experts,
            experts < num_layout,
            totals,
            padded,
            padded_start,
            bin_ids,
            numel,
            block_size,
            MAP_BLOCK_IDS,
            WRITE_EXPERT_IDS,
            WRITE_OFFSETS,
            EXPERTS_PER_PROGRAM,
            PAD_TILE,
            FILL_TILE,
        )
    fill_unused_tail(
        sorted_ids_ptr,
        expert_ids_ptr,
        post_pad_ptr,
        padded,
        bin_ids,
        chunk,
        num_chunks,
        numel,
        num_experts,
        block_size,
        length,
        num_blocks,
        WRITE_EXPERT_IDS,
        FILL_TILE,
    )
