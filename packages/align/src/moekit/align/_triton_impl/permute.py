"""Triton paths of ``moe_permute`` (segment layout with block 1, then a row gather) and
``moe_unpermute`` (a weighted gather-sum per token)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moekit.align._triton_impl.block_align import lay_out_segments


@triton.jit
def gather_rows_kernel(
    hidden_ptr,
    permuted_idx_ptr,
    permuted_ptr,
    hidden_size,
    top_k,
    stride_row,
    BLOCK_H: tl.constexpr,
):
    position = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    col_mask = cols < hidden_size
    token = tl.load(permuted_idx_ptr + position) // top_k
    row = tl.load(hidden_ptr + token * stride_row + cols, mask=col_mask)
    tl.store(permuted_ptr + position * hidden_size + cols, row, mask=col_mask)


def moe_permute(
    hidden_states: torch.Tensor,
    topk_ids: torch.Tensor,
    num_experts: int,
    expert_map: torch.Tensor | None,
    num_local_experts: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    num_tokens, top_k = topk_ids.shape
    numel = num_tokens * top_k
    hidden_size = hidden_states.shape[1]
    layout = lay_out_segments(
        topk_ids,
        num_experts,
        1,
        numel,
        expert_map,
        map_to_local=expert_map is not None,
        place_unmapped_last=True,
        write_expert_ids=False,
        write_scatter=True,
        write_offsets=True,
    )
    permuted_idx = layout["sorted_token_ids"]
    offsets = layout["offsets"]
    # Local ids at or past num_local_experts do not exist (checked), so every offset from
    # num_local_experts on equals the number of local slots.
    expert_first_token_offset = (
        offsets[: num_local_experts + 1]
        if numel
        else torch.zeros(num_local_experts + 1, dtype=torch.int64, device=topk_ids.device)
    )
    permuted = torch.empty(
        (numel, hidden_size), dtype=hidden_states.dtype, device=hidden_states.device
    )
    if numel and hidden_size:
        block_h = min(1024, triton.next_power_of_2(hidden_size))
        gather_rows_kernel[(numel, triton.cdiv(hidden_size, block_h))](
            hidden_states,
            permuted_idx,
            permuted,
            hidden_size,
            top_k,
            hidden_states.stride(0),
            BLOCK_H=block_h,
        )
    return permuted, expert_first_token_offset, layout["scatter_idx"], permuted_idx


@triton.jit
def unpermute_kernel(
    permuted_ptr,
    weights_ptr,
    inv_ptr,
    offsets_ptr,
    out_ptr,
    hidden_size,
    top_k,
    num_offsets,
    BLOCK_H: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    col_mask = cols < hidden_size
    num_local_rows = tl.load(offsets_ptr + num_offsets - 1)
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for j in range(0, top_k):
        row = tl.load(inv_ptr + token * top_k + j).to(tl.int64)
        weight = tl.load(weights_ptr + token * top_k + j).to(tl.float32)
        local = row < num_local_rows
        values = tl.load(permuted_ptr + row * hidden_size + cols, mask=col_mask & local, other=0.0)
        acc += tl.where(local, weight * values.to(tl.float32), 0.0)
    tl.store(out_ptr + token * hidden_size + cols, acc, mask=col_mask)


def moe_unpermute(
    permuted: torch.Tensor,
    topk_weights: torch.Tensor,
    inv_permuted_idx: torch.Tensor,
    expert_first_token_offset: torch.Tensor,
) -> torch.Tensor:
    num_tokens, top_k = topk_weights.shape
    hidden_size = permuted.shape[1]
    out = torch.empty((num_tokens, hidden_size), dtype=permuted.dtype, device=permuted.device)
    if num_tokens == 0 or hidden_size == 0:
        return out
    block_h = min(1024, triton.next_power_of_2(hidden_size))
    unpermute_kernel[(num_tokens, triton.cdiv(hidden_size, block_h))](
        permuted.contiguous(),
        topk_weights.contiguous(),
        inv_permuted_idx.contiguous(),
        expert_first_token_offset.contiguous(),
        out,
        hidden_size,
        top_k,
        expert_first_token_offset.numel(),
        BLOCK_H=block_h,
    )
    return out
