"""Launchers of the Triton path of ``moe_align_block_size`` and of the permute layout."""

from __future__ import annotations

import torch
import triton

from moekit.align._backend import programmatic_launch_supported
from moekit.align._sizes import cdiv, sorted_ids_length
from moekit.align._triton_impl.launch_config import (
    layout_config,
    num_histogram_bins,
    pad_tile,
)
from moekit.align._triton_impl.programmatic_launch import (
    launch_options,
)
from moekit.align._triton_impl.segment_kernels import (
    chunk_histogram_kernel,
    place_segments_kernel,
)
from moekit.align._triton_impl.sorted_chunk_kernels import (
    chunk_prefix_kernel,
    place_sorted_chunk_kernel,
)

_FILL_TILE = 256
_SCAN_CHUNKS = 64
_SCAN_BINS = 32


def lay_out_segments(
    topk_ids: torch.Tensor,
    num_experts: int,
    block_size: int,
    length: int,
    expert_map: torch.Tensor | None,
    *,
    map_to_local: bool,
    map_block_ids: bool = False,
    place_unmapped_last: bool = False,
    write_expert_ids: bool = True,
    write_scatter: bool = False,
    write_offsets: bool = False,
    programmatic_launch: bool = False,
) -> dict[str, torch.Tensor]:
    """Run the two layout kernels; returns the outputs asked for by the flags. With
    ``programmatic_launch`` (where supported) they launch as ``moe_align_block_size`` says."""
    device = topk_ids.device
    programmatic = programmatic_launch and programmatic_launch_supported(device)
    ids = topk_ids.reshape(-1)
    if ids.dtype not in (torch.int32, torch.int64):
        ids = ids.to(torch.int32)
    ids = ids.contiguous()
    numel = ids.numel()
    num_layout = num_experts + 1 if place_unmapped_last else num_experts
    num_blocks = cdiv(length, block_size)

    # One int32 allocation, sliced into the outputs, keeps the host-side cost per call low.
    config = layout_config(numel, num_layout)
    num_chunks = config.num_chunks(numel)
    num_bins = num_histogram_bins(num_layout)
    if config.sort_chunks:
        hist_rows = num_chunks + 1  # the totals follow the chunks' prefixes
    else:
        hist_rows = num_chunks if num_chunks > 1 else 0
    sizes = {
        "sorted_token_ids": length,
        "expert_ids": num_blocks if write_expert_ids else 0,
        "num_tokens_post_pad": 1,
        "scatter_idx": numel if write_scatter else 0,
        "chunk_hist": hist_rows * num_bins,
    }
    buffer = torch.empty(sum(sizes.values()), dtype=torch.int32, device=device)
    out = dict(zip(sizes, torch.split(buffer, list(sizes.values()))))
    out["offsets"] = torch.empty(
        num_layout if write_offsets else 0, dtype=torch.int64, device=device
    )
    if numel == 0:
        out.pop("chunk_hist")
        out["num_tokens_post_pad"].zero_()
        out["offsets"].zero_()
        return out

    map_arg = expert_map if expert_map is not None else ids
    chunk_hist = out.pop("chunk_hist")
    if num_chunks > 1 or config.sort_chunks:
        chunk_histogram_kernel[(num_chunks,)](
            ids,
            map_arg,
            chunk_hist,
            numel,
            num_experts,
            num_experts,
            MAP_TO_LOCAL=map_to_local,
            CHUNK=config.chunk,
            NUM_BINS=num_bins,
            PROGRAMMATIC=programmatic,
            num_warps=config.num_warps,
            **launch_options(programmatic),
        )
    # Both placement kernels take the same arguments; each adds its own launch shape.
    placement_args = (
        ids,
        map_arg,
        chunk_hist,
        out["sorted_token_ids"],
        out["expert_ids"],
        out["num_tokens_post_pad"],
        out["scatter_idx"],
        out["offsets"],
        numel,
        num_experts,
        block_size,
        length,
        num_blocks,
        num_chunks,
    )
    placement_options = dict(
        MAP_TO_LOCAL=map_to_local,
        MAP_BLOCK_IDS=map_block_ids,
        PLACE_UNMAPPED_LAST=place_unmapped_last,
        WRITE_EXPERT_IDS=write_expert_ids,
        WRITE_SCATTER=write_scatter,
        WRITE_OFFSETS=write_offsets,
        CHUNK=config.chunk,
        NUM_BINS=num_bins,
        EXPERTS_PER_PROGRAM=config.experts_per_program,
        PAD_TILE=pad_tile(block_size),
        FILL_TILE=_FILL_TILE,
        PROGRAMMATIC=programmatic,
        num_warps=config.num_warps,
        **launch_options(programmatic),
    )
    if config.sort_chunks:
        scan_bins = min(_SCAN_BINS, num_bins)
        chunk_prefix_kernel[(num_bins // scan_bins,)](
            chunk_hist,
            num_chunks,
            NUM_BINS=num_bins,
            SCAN_CHUNKS=_SCAN_CHUNKS,
            SCAN_BINS=scan_bins,
            PROGRAMMATIC=programmatic,
            num_warps=4,
            **launch_options(programmatic),
        )
        place_sorted_chunk_kernel[(num_chunks,)](*placement_args, **placement_options)
    else:
        grid = (triton.cdiv(num_layout, config.experts_per_program), num_chunks)
        place_segments_kernel[grid](
            *placement_args, SINGLE_CHUNK=num_chunks == 1, SUB=config.sub, **placement_options
        )
    return out


def moe_align_block_size(
    topk_ids: torch.Tensor,
    block_size: int,
    num_experts: int,
    expert_map: torch.Tensor | None,
    pad_sorted_ids: bool,
    ignore_invalid_experts: bool,
    return_scatter_idx: bool,
    programmatic_launch: bool = False,
) -> tuple[torch.Tensor, ...]:
    numel = topk_ids.numel()
    length = sorted_ids_length(numel, num_experts, block_size, pad_sorted_ids)
    out = lay_out_segments(
        topk_ids,
        num_experts,
        block_size,
        length,
        expert_map,
        map_to_local=expert_map is not None and ignore_invalid_experts,
        map_block_ids=expert_map is not None and not ignore_invalid_experts,
        write_scatter=return_scatter_idx,
        programmatic_launch=programmatic_launch,
    )
    outputs: tuple[torch.Tensor, ...] = (
        out["sorted_token_ids"],
        out["expert_ids"],
        out["num_tokens_post_pad"],
    )
    if return_scatter_idx:
        outputs = (*outputs, out["scatter_idx"].reshape(numel, 1))
    return outputs
