"""Torch path of ``moe_align_block_size`` and ``batched_moe_align_block_size``.

Written with whole-tensor ops only (stable argsort, bincount, cumsum, scatter) so it never
synchronises with the device.
"""

from __future__ import annotations

import torch

from moekit.align._sizes import cdiv, round_up, sorted_ids_length


def layout_bins(
    topk_ids: torch.Tensor,
    num_experts: int,
    expert_map: torch.Tensor | None,
    map_to_local: bool,
) -> torch.Tensor:
    """Segment of each flat slot (int64): its expert, or ``num_experts`` when it is not placed."""
    ids = topk_ids.reshape(-1).long()
    valid = (ids >= 0) & (ids < num_experts)
    bins = torch.where(valid, ids, 0)
    if map_to_local and expert_map is not None:
        local = expert_map.long()[bins]
        valid &= (local >= 0) & (local < num_experts)
        bins = local
    return torch.where(valid, bins, num_experts)


def bin_counts(bins: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Occurrences of each value ``0..num_bins-1`` in ``bins`` (int64); larger values are dropped.

    ``scatter_add_`` rather than ``bincount``: bincount reads its input's maximum on the host,
    which synchronises the stream and breaks CUDA-graph capture.
    """
    counts = torch.zeros(num_bins + 1, dtype=torch.int64, device=bins.device)
    counts.scatter_add_(0, bins.clamp(max=num_bins), torch.ones_like(bins))
    return counts[:num_bins]


def place_by_bin(
    bins: torch.Tensor, num_bins: int, block_size: int, length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stable placement of slots into block-padded segments of bins ``0..num_bins-1``.

    Returns ``(sorted_token_ids int32[length], destination int64[numel] (-1 if not placed),
    padded segment ends int64[num_bins])``; bins ``>= num_bins`` are not placed.
    """
    numel = bins.numel()
    device = bins.device
    counts = bin_counts(bins, num_bins)
    padded_ends = torch.cumsum(round_up_tensor(counts, block_size), 0)
    padded_starts = padded_ends - round_up_tensor(counts, block_size)
    unpadded_starts = torch.cumsum(counts, 0) - counts

    order = torch.argsort(bins, stable=True)
    sorted_bins = bins[order]
    placed = sorted_bins < num_bins
    safe_bins = torch.where(placed, sorted_bins, 0)
    rank = torch.arange(numel, device=device) - unpadded_starts[safe_bins]
    destination_sorted = torch.where(placed, padded_starts[safe_bins] + rank, length)

    sorted_token_ids = torch.full((length + 1,), numel, dtype=torch.int32, device=device)
    sorted_token_ids.scatter_(0, destination_sorted, order.to(torch.int32))
    destination = torch.empty(numel, dtype=torch.int64, device=device)
    destination.scatter_(0, order, torch.where(placed, destination_sorted, -1))
    return sorted_token_ids[:length], destination, padded_ends


def round_up_tensor(values: torch.Tensor, multiple: int) -> torch.Tensor:
    return (values + multiple - 1) // multiple * multiple


def block_experts(
    padded_ends: torch.Tensor, block_size: int, num_blocks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert of each block (int64, -1 past the used range) and the used length (int32[1])."""
    block_ends = padded_ends // block_size
    blocks = torch.arange(num_blocks, device=padded_ends.device)
    owner = torch.searchsorted(block_ends, blocks, right=True)
    used_blocks = block_ends[-1] if block_ends.numel() else torch.zeros((), dtype=torch.int64)
    expert_ids = torch.where(blocks < used_blocks, owner, -1)
    post_pad = (used_blocks * block_size).to(torch.int32).reshape(1)
    return expert_ids, post_pad


def moe_align_block_size(
    topk_ids: torch.Tensor,
    block_size: int,
    num_experts: int,
    expert_map: torch.Tensor | None,
    pad_sorted_ids: bool,
    ignore_invalid_experts: bool,
    return_scatter_idx: bool,
) -> tuple[torch.Tensor, ...]:
    numel = topk_ids.numel()
    length = sorted_ids_length(numel, num_experts, block_size, pad_sorted_ids)
    bins = layout_bins(topk_ids, num_experts, expert_map, ignore_invalid_experts)
    sorted_token_ids, destination, padded_ends = place_by_bin(bins, num_experts, block_size, length)
    expert_ids, post_pad = block_experts(padded_ends, block_size, cdiv(length, block_size))
    if expert_map is not None and not ignore_invalid_experts:
        expert_ids = torch.where(expert_ids >= 0, expert_map.long()[expert_ids.clamp(min=0)], -1)
    outputs: tuple[torch.Tensor, ...] = (
        sorted_token_ids,
        expert_ids.to(torch.int32),
        post_pad.to(topk_ids.device),
    )
    if return_scatter_idx:
        outputs = (*outputs, destination.to(torch.int32).reshape(numel, 1))
    return outputs


def batched_moe_align_block_size(
    max_tokens_per_batch: int, block_size: int, expert_num_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = expert_num_tokens.device
    num_batches = expert_num_tokens.numel()
    length = num_batches * round_up(max_tokens_per_batch, block_size)
    counts = expert_num_tokens.long()
    rows = torch.arange(num_batches * max_tokens_per_batch, device=device)
    row_batch = rows // max_tokens_per_batch
    row_in_batch = rows % max_tokens_per_batch
    valid = row_in_batch < counts[row_batch]
    bins = torch.where(valid, row_batch, num_batches)
    sorted_token_ids, _, padded_ends = place_by_bin(bins, num_batches, block_size, length)
    expert_ids, post_pad = block_experts(padded_ends, block_size, length // block_size)
    return sorted_token_ids, expert_ids.to(torch.int32), post_pad.to(device)
