"""Public ``moe_align_block_size`` and ``batched_moe_align_block_size``."""

from __future__ import annotations

import torch

from moekit.align._backend import Backend, resolve_backend
from moekit.align._checks import (
    check_bool,
    check_expert_map,
    check_positive_int,
    check_same_device,
    check_tensor,
    check_topk_ids,
)


def moe_align_block_size(
    topk_ids: torch.Tensor,
    block_size: int,
    num_experts: int,
    expert_map: torch.Tensor | None = None,
    pad_sorted_ids: bool = False,
    ignore_invalid_experts: bool = False,
    return_scatter_idx: bool = False,
    *,
    backend: Backend = "auto",
    programmatic_launch: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Sort routed slots by expert into segments padded to a multiple of ``block_size``.

    Slot ``i = t * top_k + j`` of ``topk_ids`` is valid when ``0 <= topk_ids[t, j] < num_experts``;
    valid slots are written, in ascending ``i``, into their expert's segment of
    ``sorted_token_ids``; segments follow each other in expert order, each padded with the
    sentinel ``numel`` up to a multiple of ``block_size``.

    Args:
        topk_ids: ``[num_tokens, top_k]``, any integer dtype; the global expert of each slot.
        block_size: rows per GEMM block (``>= 1``).
        num_experts: the **global** number of experts (``>= 1``).
        expert_map: optional int32 ``[num_experts]``, global id -> local id or ``-1``.
        pad_sorted_ids: round the length of ``sorted_token_ids`` up to a multiple of
            ``block_size``.
        ignore_invalid_experts: with ``expert_map``: drop slots of non-local experts and lay
            segments out by local id; without it, lay out by global id and mark the blocks of
            non-local experts ``-1``.
        return_scatter_idx: also return ``scatter_idx int32[numel, 1]``: the position of each
            slot in ``sorted_token_ids``, ``-1`` for a slot that was not placed.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.
        programmatic_launch: on a GPU of compute capability 9.0 or later (Triton path, not the
            interpreter; ignored elsewhere), launch with programmatic dependent launch: the
            kernels wait for the previous kernel in the stream before they touch memory, and
            let the next kernel start its programs before they end, if that kernel is
            launched the same way; it must then wait (``griddepcontrol.wait``) before it reads
            the outputs. A chain of such kernels overlaps each launch with the tail of the
            kernel before it.

    Returns:
        ``(sorted_token_ids int32[P], expert_ids int32[cdiv(P, block_size)],
        num_tokens_post_pad int32[1])`` (+ ``scatter_idx``), all on ``topk_ids.device``;
        ``expert_ids`` is ``-1`` past the used range.

    Raises:
        TypeError: ``topk_ids`` not an integer tensor, ``expert_map`` not int32,
            ``programmatic_launch`` not a bool.
        ValueError: ``topk_ids`` not 2-D, ``block_size < 1``, ``num_experts < 1``,
            ``expert_map`` of the wrong length, out-of-range or duplicate local ids (CPU maps).
    """
    topk_ids = check_topk_ids(topk_ids)
    check_positive_int(block_size, "block_size")
    check_positive_int(num_experts, "num_experts")
    check_bool(programmatic_launch, "programmatic_launch")
    if expert_map is not None:
        expert_map = check_expert_map(expert_map, num_experts)
    device = check_same_device({"topk_ids": topk_ids, "expert_map": expert_map})
    args = (
        topk_ids,
        block_size,
        num_experts,
        expert_map,
        pad_sorted_ids,
        ignore_invalid_experts,
        return_scatter_idx,
    )
    if resolve_backend(backend, device) == "triton":
        from moekit.align._triton_impl import block_align as triton_impl

        return triton_impl.moe_align_block_size(*args, programmatic_launch=programmatic_launch)
    from moekit.align._torch_impl import block_align as torch_impl

    return torch_impl.moe_align_block_size(*args)


def batched_moe_align_block_size(
    max_tokens_per_batch: int,
    block_size: int,
    expert_num_tokens: torch.Tensor,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block-aligned row ids for the batched activation format.

    Batch ``b`` owns rows ``b * max_tokens_per_batch + j`` (``j < expert_num_tokens[b]``) of a
    ``[num_batches * max_tokens_per_batch, K]`` tensor. Its rows are written contiguously, padded
    with the sentinel ``num_batches * max_tokens_per_batch`` to a multiple of ``block_size``; an
    empty batch takes no block.

    Args:
        max_tokens_per_batch: rows reserved per batch (``>= 1``).
        block_size: rows per GEMM block (``>= 1``).
        expert_num_tokens: integer ``[num_batches]``, valid rows of each batch, each in
            ``[0, max_tokens_per_batch]``. Checked on the host (one device read on a GPU).
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        ``(sorted_token_ids int32[num_batches * round_up(max_tokens_per_batch, block_size)],
        expert_ids int32[that / block_size], num_tokens_post_pad int32[1])``.

    Raises:
        TypeError: ``expert_num_tokens`` not an integer tensor.
        ValueError: a count outside ``[0, max_tokens_per_batch]``, a non 1-D count tensor,
            ``max_tokens_per_batch < 1`` or ``block_size < 1``.
    """
    check_positive_int(max_tokens_per_batch, "max_tokens_per_batch")
    check_positive_int(block_size, "block_size")
    counts = check_tensor(expert_num_tokens, "expert_num_tokens")
    if counts.dtype.is_floating_point or counts.dtype.is_complex or counts.dtype == torch.bool:
        raise TypeError(f"expert_num_tokens must have an integer dtype, got {counts.dtype}")
    if counts.dim() != 1:
        raise ValueError(
            f"expert_num_tokens must be 1-D [num_batches], got shape {tuple(counts.shape)}"
        )
    if counts.numel():
        low, high = int(counts.min()), int(counts.max())
        if low < 0 or high > max_tokens_per_batch:
            raise ValueError(
                f"expert_num_tokens values must lie in [0, max_tokens_per_batch="
                f"{max_tokens_per_batch}], got values in [{low}, {high}]"
            )
    if resolve_backend(backend, counts.device) == "triton":
        from moekit.align._triton_impl import batched as triton_impl

        return triton_impl.batched_moe_align_block_size(max_tokens_per_batch, block_size, counts)
    from moekit.align._torch_impl import block_align as torch_impl

    return torch_impl.batched_moe_align_block_size(max_tokens_per_batch, block_size, counts)
