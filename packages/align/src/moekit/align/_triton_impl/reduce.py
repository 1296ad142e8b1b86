"""Triton paths of ``moe_sum`` and ``count_expert_num_tokens``."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from moekit.align._backend import programmatic_launch_supported
from moekit.align._triton_impl.launch_config import num_histogram_bins
from moekit.align._triton_impl.programmatic_launch import (
    launch_options,
    wait_for_prior_kernel,
)
from moekit.align._triton_impl.segment_kernels import slot_bins

_COUNT_CHUNK = 4096  # slots per program of the counting kernel


# At least this many programs, so that few tokens still spread their rows' loads over the SMs;
# each program's loads are all issued before the first add (the slots are unrolled).
_SUM_MIN_PROGRAMS = 256
_SUM_MAX_BLOCK_H = 1024
_SUM_MIN_BLOCK_H = 128
_SUM_MAX_WARPS = 4


@triton.jit
def slot_is_local(topk_ids_ptr, expert_map_ptr, slot, map_size, HAS_MAP: tl.constexpr):
    """Whether flat slot ``slot`` adds to its token: its id is ``>= 0`` and, with a map, local."""
    expert = tl.load(topk_ids_ptr + slot)
    keep = expert >= 0
    if HAS_MAP:
        in_map = keep & (expert < map_size)
        local = tl.load(expert_map_ptr + tl.where(in_map, expert, 0))
        keep = in_map & (local >= 0)
    return keep


@triton.jit
def moe_sum_kernel(
    input_ptr,
    output_ptr,
    topk_ids_ptr,
    expert_map_ptr,
    hidden_size,
    map_size,
    stride_t,
    stride_k,
    stride_h,
    TOP_K: tl.constexpr,
    HAS_IDS: tl.constexpr,
    HAS_MAP: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PROGRAMMATIC: tl.constexpr,
):
    wait_for_prior_kernel(PROGRAMMATIC, False)  # the next kernel is the caller's
    token = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    col_mask = cols < hidden_size
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for j in tl.static_range(TOP_K):  # in slot order: the float32 sum is the same every call
        keep = True
        if HAS_IDS:
            keep = slot_is_local(topk_ids_ptr, expert_map_ptr, token * TOP_K + j, map_size, HAS_MAP)
        row = tl.load(
            input_ptr + token * stride_t + j * stride_k + cols * stride_h,
            mask=col_mask & keep,
            other=0.0,
        )
        acc += row.to(tl.float32)
    tl.store(output_ptr + token * hidden_size + cols, acc, mask=col_mask)


def sum_launch(num_tokens: int, hidden_size: int) -> tuple[int, int]:
    """``(columns per program, warps)``: up to 1024 columns, halved while the grid has fewer than
    256 programs, 8 columns a thread (16-byte bf16 loads) in up to 4 warps."""
    block_h = min(_SUM_MAX_BLOCK_H, triton.next_power_of_2(hidden_size))
    while block_h > _SUM_MIN_BLOCK_H and num_tokens * triton.cdiv(hidden_size, block_h) < (
        _SUM_MIN_PROGRAMS
    ):
        block_h //= 2
    return block_h, max(1, min(_SUM_MAX_WARPS, block_h // 256))


def moe_sum(
    input: torch.Tensor,
    output: torch.Tensor,
    topk_ids: torch.Tensor | None,
    expert_map: torch.Tensor | None,
    programmatic_launch: bool = False,
) -> torch.Tensor:
    num_tokens, top_k, hidden_size = input.shape
    if num_tokens == 0 or hidden_size == 0:
        return output
    block_h, num_warps = sum_launch(num_tokens, hidden_size)
    programmatic = programmatic_launch and programmatic_launch_supported(input.device)
    ids = topk_ids.contiguous() if topk_ids is not None else input
    moe_sum_kernel[(num_tokens, triton.cdiv(hidden_size, block_h))](
        input,
        output,
        ids,
        expert_map if expert_map is not None else input,
        hidden_size,
        expert_map.numel() if expert_map is not None else 0,
        *input.stride(),
        TOP_K=top_k,
        HAS_IDS=topk_ids is not None,
        HAS_MAP=expert_map is not None,
        BLOCK_H=block_h,
        PROGRAMMATIC=programmatic,
        num_warps=num_warps,
        **launch_options(programmatic),
    )
    return output


@triton.jit
def count_kernel(
    topk_ids_ptr,
    expert_map_ptr,
    counts_ptr,
    numel,
    num_ids,
    num_local_experts,
    MAP_TO_LOCAL: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    CHUNK: tl.constexpr,
    NUM_BINS: tl.constexpr,
):
    offs = tl.program_id(0) * CHUNK + tl.arange(0, CHUNK)
    bins = slot_bins(
        topk_ids_ptr, expert_map_ptr, offs, numel, num_ids, num_local_experts, MAP_TO_LOCAL
    )
    hist = tl.histogram(bins, NUM_BINS)
    experts = tl.arange(0, NUM_BINS)
    if ACCUMULATE:
        tl.atomic_add(counts_ptr + experts, hist, mask=experts < num_local_experts)
    else:
        tl.store(counts_ptr + experts, hist, mask=experts < num_local_experts)


def count_expert_num_tokens(
    topk_ids: torch.Tensor, num_local_experts: int, expert_map: torch.Tensor | None
) -> torch.Tensor:
    ids = topk_ids.reshape(-1)
    if ids.dtype not in (torch.int32, torch.int64):
        ids = ids.to(torch.int32)
    ids = ids.contiguous()
    numel = ids.numel()
    single = numel <= _COUNT_CHUNK
    chunk = max(16, triton.next_power_of_2(numel)) if single else _COUNT_CHUNK
    num_chunks = max(1, triton.cdiv(numel, chunk))
    alloc = torch.empty if single else torch.zeros
    counts = alloc(num_local_experts, dtype=torch.int32, device=ids.device)
    count_kernel[(num_chunks,)](
        ids,
        expert_map if expert_map is not None else ids,
        counts,
        numel,
        expert_map.numel() if expert_map is not None else num_local_experts,
        num_local_experts,
        MAP_TO_LOCAL=expert_map is not None,
        ACCUMULATE=not single,
        CHUNK=chunk,
        NUM_BINS=num_histogram_bins(num_local_experts),
    )
    return counts
