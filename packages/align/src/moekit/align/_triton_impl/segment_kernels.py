"""Kernels that lay flat routing slots out in per-expert, block-padded segments.

The layout is computed in two steps that write every output element exactly once (no
pre-fill, no atomics, deterministic):

1. ``chunk_histogram_kernel`` (only when the slots span several chunks): one program per chunk
   of ``CHUNK`` slots stores that chunk's per-expert counts.
2. ``place_segments_kernel``: program ``(group, chunk)`` owns ``EXPERTS_PER_PROGRAM`` experts
   and one chunk. From the counts it derives where each of its experts' segment starts and how
   many of the expert's slots come from earlier chunks, then writes its slots with a running
   ``cumsum`` so slots keep ascending order inside a segment. Programs of chunk 0 also write the
   sentinel padding and ``expert_ids`` of their segments; all programs share the tail fill.

With a single chunk, step 2 computes the histogram itself and step 1 is skipped: one launch.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moekit.align._triton_impl.programmatic_launch import wait_for_prior_kernel


@triton.jit
def slot_bins(
    topk_ids_ptr,
    expert_map_ptr,
    offs,
    numel,
    num_ids,
    num_bins_valid,
    MAP_TO_LOCAL: tl.constexpr,
):
    """Segment of each slot in ``offs``: its (local) expert, ``num_bins_valid`` for a slot that is
    not placed, ``num_bins_valid + 1`` for a lane past ``numel`` (so it is never counted as one)."""
    in_range = offs < numel
    ids = tl.load(topk_ids_ptr + offs, mask=in_range, other=-1)
    valid = in_range & (ids >= 0) & (ids < num_ids)
    bins = tl.where(valid, ids, 0).to(tl.int32)
    if MAP_TO_LOCAL:
        local = tl.load(expert_map_ptr + bins, mask=valid, other=-1)
        valid = valid & (local >= 0) & (local < num_bins_valid)
        bins = local
    bins = tl.where(valid, bins, num_bins_valid)
    return tl.where(in_range, bins, num_bins_valid + 1)


@triton.jit
def chunk_histogram_kernel(
    topk_ids_ptr,
    expert_map_ptr,
    chunk_hist_ptr,
    numel,
    num_ids,
    num_bins_valid,
    MAP_TO_LOCAL: tl.constexpr,
    CHUNK: tl.constexpr,
    NUM_BINS: tl.constexpr,
    PROGRAMMATIC: tl.constexpr,
):
    wait_for_prior_kernel(PROGRAMMATIC, PROGRAMMATIC)
    chunk = tl.program_id(0)
    offs = chunk * CHUNK + tl.arange(0, CHUNK)
    bins = slot_bins(
        topk_ids_ptr, expert_map_ptr, offs, numel, num_ids, num_bins_valid, MAP_TO_LOCAL
    )
    hist = tl.histogram(bins, NUM_BINS)
    tl.store(chunk_hist_ptr + chunk * NUM_BINS + tl.arange(0, NUM_BINS), hist)


@triton.jit
def expert_counts(
    topk_ids_ptr,
    expert_map_ptr,
    chunk_hist_ptr,
    chunk,
    numel,
    num_experts,
    num_chunks,
    MAP_TO_LOCAL: tl.constexpr,
    SINGLE_CHUNK: tl.constexpr,
    CHUNK: tl.constexpr,
    NUM_BINS: tl.constexpr,
):
    """Per-expert slot counts over all chunks, and over the chunks before ``chunk``."""
    if SINGLE_CHUNK:
        bins = slot_bins(
            topk_ids_ptr,
            expert_map_ptr,
            tl.arange(0, CHUNK),
            numel,
            num_experts,
            num_experts,
            MAP_TO_LOCAL,
        )
        totals = tl.histogram(bins, NUM_BINS)
        before = tl.zeros([NUM_BINS], dtype=tl.int32)
    else:
        bin_ids = tl.arange(0, NUM_BINS)
        totals = tl.zeros([NUM_BINS], dtype=tl.int32)
        before = tl.zeros([NUM_BINS], dtype=tl.int32)
        for other in range(0, num_chunks):
            hist = tl.load(chunk_hist_ptr + other * NUM_BINS + bin_ids)
            totals += hist
            before += tl.where(other < chunk, hist, 0)
    return totals, before


@triton.jit
def pick(values, bin_ids, experts):
    """``values[experts]`` for a vector held in registers (a one-hot reduction)."""
    return tl.sum(tl.where(bin_ids[None, :] == experts[:, None], values[None, :], 0), 1)


@triton.jit
def place_segments_kernel(
    topk_ids_ptr,
    expert_map_ptr,
    chunk_hist_ptr,
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
    SINGLE_CHUNK: tl.constexpr,
    CHUNK: tl.constexpr,
    SUB: tl.constexpr,
    NUM_BINS: tl.constexpr,
    EXPERTS_PER_PROGRAM: tl.constexpr,
    PAD_TILE: tl.constexpr,
    FILL_TILE: tl.constexpr,
    PROGRAMMATIC: tl.constexpr,
):
    wait_for_prior_kernel(PROGRAMMATIC, PROGRAMMATIC)
    group = tl.program_id(0)
    chunk = tl.program_id(1)
    if PLACE_UNMAPPED_LAST:
        num_layout = num_experts + 1
    else:
        num_layout = num_experts

    totals, before = expert_counts(
        topk_ids_ptr,
        expert_map_ptr,
        chunk_hist_ptr,
        chunk,
        numel,
        num_experts,
        num_chunks,
        MAP_TO_LOCAL,
        SINGLE_CHUNK,
        CHUNK,
        NUM_BINS,
    )
    bin_ids = tl.arange(0, NUM_BINS)
    totals = tl.where(bin_ids < num_layout, totals, 0)
    padded = (totals + block_size - 1) // block_size * block_size
    padded_start = tl.cumsum(padded, 0) - padded

    experts = group * EXPERTS_PER_PROGRAM + tl.arange(0, EXPERTS_PER_PROGRAM)
    is_expert = experts < num_layout
    segment_start = pick(padded_start, bin_ids, experts)
    write_at = segment_start + pick(before, bin_ids, experts)

    for sub in range(0, CHUNK, SUB):
        offs = chunk * CHUNK + sub + tl.arange(0, SUB)
        bins = slot_bins(
            topk_ids_ptr, expert_map_ptr, offs, numel, num_experts, num_experts, MAP_TO_LOCAL
        )
        hit = (bins[None, :] == experts[:, None]) & is_expert[:, None]
        destination = write_at[:, None] + tl.cumsum(hit.to(tl.int32), 1) - 1
        slots = tl.broadcast_to(offs[None, :], [EXPERTS_PER_PROGRAM, SUB])
        tl.store(sorted_ids_ptr + destination, slots, mask=hit)
        if WRITE_SCATTER:
            tl.store(scatter_idx_ptr + slots, destination, mask=hit)
            if not PLACE_UNMAPPED_LAST:
                unplaced = (bins == num_experts) & (offs < numel) & (group == 0)
                tl.store(scatter_idx_ptr + offs, -1, mask=unplaced)
        write_at += tl.sum(hit.to(tl.int32), 1)

    if chunk == 0:
        write_segment_ends(
            sorted_ids_ptr,
            expert_ids_ptr,
            offsets_ptr,
            expert_map_ptr,
            experts,
            is_expert,
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
        chunk * tl.num_programs(0) + group,
        tl.num_programs(0) * tl.num_programs(1),
        numel,
        num_experts,
        block_size,
        length,
        num_blocks,
        WRITE_EXPERT_IDS,
        FILL_TILE,
    )


@triton.jit
def write_segment_ends(
    sorted_ids_ptr,
    expert_ids_ptr,
    offsets_ptr,
    expert_map_ptr,
    experts,
    is_expert,
    totals,
    padded,
    padded_start,
    bin_ids,
    numel,
    block_size,
    MAP_BLOCK_IDS: tl.constexpr,
    WRITE_EXPERT_IDS: tl.constexpr,
    WRITE_OFFSETS: tl.constexpr,
    EXPERTS_PER_PROGRAM: tl.constexpr,
    PAD_TILE: tl.constexpr,
    FILL_TILE: tl.constexpr,
):
    """For each of ``experts``: the sentinel padding after its slots, the expert id of each of
    its blocks, and its segment's start in ``offsets``."""
    segment_start = pick(padded_start, bin_ids, experts)
    count = pick(totals, bin_ids, experts)
    segment = pick(padded, bin_ids, experts)
    pad = tl.arange(0, PAD_TILE)
    pad_mask = is_expert[:, None] & (pad[None, :] < (segment - count)[:, None])
    pad_pos = (segment_start + count)[:, None] + pad[None, :]
    tl.store(sorted_ids_ptr + pad_pos, numel, mask=pad_mask)
    if WRITE_EXPERT_IDS:
        first_block = segment_start // block_size
        segment_blocks = segment // block_size
        block_value = experts
        if MAP_BLOCK_IDS:
            block_value = tl.load(expert_map_ptr + experts, mask=is_expert, other=-1)
        block_value = tl.broadcast_to(block_value[:, None], [EXPERTS_PER_PROGRAM, FILL_TILE])
        for block0 in range(0, tl.max(segment_blocks, 0), FILL_TILE):
            block = block0 + tl.arange(0, FILL_TILE)
            block_mask = is_expert[:, None] & (block[None, :] < segment_blocks[:, None])
            block_ptr = expert_ids_ptr + first_block[:, None] + block[None, :]
            tl.store(block_ptr, block_value, mask=block_mask)
    if WRITE_OFFSETS:
        tl.store(offsets_ptr + experts, segment_start.to(tl.int64), mask=is_expert)


@triton.jit
def fill_unused_tail(
    sorted_ids_ptr,
    expert_ids_ptr,
    post_pad_ptr,
    padded,
    bin_ids,
    program,
    num_programs,
    numel,
    num_experts,
    block_size,
    length,
    num_blocks,
    WRITE_EXPERT_IDS: tl.constexpr,
    FILL_TILE: tl.constexpr,
):
    """Program ``program`` of ``num_programs``: its share of the sentinels and ``-1`` block ids
    past the last segment; program 0 also stores ``num_tokens_post_pad``."""
    used_end = tl.sum(padded, 0)
    stride = num_programs * FILL_TILE
    for start in range(used_end + program * FILL_TILE, length, stride):
        pos = start + tl.arange(0, FILL_TILE)
        tl.store(sorted_ids_ptr + pos, numel, mask=pos < length)
    if WRITE_EXPERT_IDS:
        for start in range(used_end // block_size + program * FILL_TILE, num_blocks, stride):
            block = start + tl.arange(0, FILL_TILE)
            tl.store(expert_ids_ptr + block, -1, mask=block < num_blocks)
    if program == 0:
        tl.store(post_pad_ptr, tl.sum(tl.where(bin_ids < num_experts, padded, 0), 0))
