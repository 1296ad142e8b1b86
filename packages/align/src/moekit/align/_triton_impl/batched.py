"""Triton path of ``batched_moe_align_block_size``: one program per batch."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moekit.align._sizes import round_up

_ROW_TILE = 128


@triton.jit
def batched_align_kernel(
    counts_ptr,
    sorted_ids_ptr,
    expert_ids_ptr,
    post_pad_ptr,
    num_batches,
    max_tokens_per_batch,
    block_size,
    length,
    NUM_BATCHES_POW2: tl.constexpr,
    ROW_TILE: tl.constexpr,
):
    batch = tl.program_id(0)
    batch_ids = tl.arange(0, NUM_BATCHES_POW2)
    counts = tl.load(counts_ptr + batch_ids, mask=batch_ids < num_batches, other=0).to(tl.int32)
    counts = tl.minimum(tl.maximum(counts, 0), max_tokens_per_batch)
    padded = (counts + block_size - 1) // block_size * block_size
    padded_start = tl.cumsum(padded, 0) - padded
    used_end = tl.sum(padded, 0)
    sentinel = num_batches * max_tokens_per_batch

    mine = batch_ids == batch
    count = tl.sum(tl.where(mine, counts, 0), 0)
    segment = tl.sum(tl.where(mine, padded, 0), 0)
    start = tl.sum(tl.where(mine, padded_start, 0), 0)
    for row0 in range(0, segment, ROW_TILE):
        row = row0 + tl.arange(0, ROW_TILE)
        value = tl.where(row < count, batch * max_tokens_per_batch + row, sentinel)
        tl.store(sorted_ids_ptr + start + row, value, mask=row < segment)
    for block0 in range(0, segment // block_size, ROW_TILE):
        block = block0 + tl.arange(0, ROW_TILE)
        tl.store(
            expert_ids_ptr + start // block_size + block, batch, mask=block < segment // block_size
        )

    stride = tl.num_programs(0) * ROW_TILE
    for pos0 in range(used_end + batch * ROW_TILE, length, stride):
        pos = pos0 + tl.arange(0, ROW_TILE)
        tl.store(sorted_ids_ptr + pos, sentinel, mask=pos < length)
    num_blocks = length // block_size
    for block0 in range(used_end // block_size + batch * ROW_TILE, num_blocks, stride):
        block = block0 + tl.arange(0, ROW_TILE)
        tl.store(expert_ids_ptr + block, -1, mask=block < num_blocks)
    if batch == 0:
        tl.store(post_pad_ptr, used_end)


def batched_moe_align_block_size(
    max_tokens_per_batch: int, block_size: int, expert_num_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = expert_num_tokens.device
    num_batches = expert_num_tokens.numel()
    length = num_batches * round_up(max_tokens_per_batch, block_size)
    sorted_ids = torch.empty(length, dtype=torch.int32, device=device)
    expert_ids = torch.empty(length // block_size, dtype=torch.int32, device=device)
    post_pad = torch.zeros(1, dtype=torch.int32, device=device)
    if num_batches == 0:
        return sorted_ids, expert_ids, post_pad
    batched_align_kernel[(num_batches,)](
        expert_num_tokens.contiguous(),
        sorted_ids,
        expert_ids,
        post_pad,
        num_batches,
        max_tokens_per_batch,
        block_size,
        length,
        NUM_BATCHES_POW2=triton.next_power_of_2(num_batches),
        ROW_TILE=_ROW_TILE,
    )
    return sorted_ids, expert_ids, post_pad
