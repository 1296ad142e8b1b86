"""Public ``moe_sum`` and ``count_expert_num_tokens``."""

from __future__ import annotations

import torch

from moekit.align._backend import Backend, resolve_backend
from moekit.align._checks import (
    check_bool,
    check_floating,
    check_positive_int,
    check_same_device,
    check_tensor,
    check_topk_ids,
)


def _check_map_dtype(expert_map: torch.Tensor | None) -> None:
    if expert_map is None:
        return
    check_tensor(expert_map, "expert_map")
    if expert_map.dtype != torch.int32 or expert_map.dim() != 1:
        raise TypeError(
            f"expert_map must be a 1-D int32 tensor, got {expert_map.dtype} "
            f"of shape {tuple(expert_map.shape)}"
        )


def moe_sum(
    input: torch.Tensor,
    output: torch.Tensor,
    topk_ids: torch.Tensor | None = None,
    expert_map: torch.Tensor | None = None,
    *,
    backend: Backend = "auto",
    programmatic_launch: bool = False,
) -> torch.Tensor:
    """Sum ``input [num_tokens, top_k, K]`` over ``top_k`` into ``output [num_tokens, K]``.

    The sum runs in float32 and is cast to ``output.dtype``. With ``topk_ids [num_tokens, top_k]``
    a slot whose id is ``< 0`` (or, with ``expert_map``, maps to ``-1`` or lies past the map) is
    skipped. ``input`` may have any strides; ``output`` must be contiguous.

    ``programmatic_launch``: on a GPU of compute capability 9.0 or later (Triton path, not the
    interpreter; ignored elsewhere), launch with programmatic dependent launch, so that the
    kernel's launch overlaps the tail of the previous kernel in the stream when that one lets it
    (see ``moe_align_block_size``); the kernel waits for that one before it touches memory.

    Returns:
        ``output``, written in place.

    Raises:
        TypeError: non-floating ``input``/``output``, non-integer ``topk_ids``, non-int32 map,
            ``programmatic_launch`` not a bool.
        ValueError: ``input`` not 3-D, ``output`` not ``[num_tokens, K]`` or not contiguous,
            ``topk_ids`` not ``[num_tokens, top_k]``, ``expert_map`` without ``topk_ids``.
    """
    input = check_floating(input, "input")
    output = check_floating(output, "output")
    if input.dim() != 3:
        raise ValueError(f"input must be 3-D [num_tokens, top_k, K], got {tuple(input.shape)}")
    num_tokens, top_k, hidden = input.shape
    if tuple(output.shape) != (num_tokens, hidden):
        raise ValueError(
            f"output must have shape [num_tokens, K]={[num_tokens, hidden]}, "
            f"got {list(output.shape)}"
        )
    if not output.is_contiguous():
        raise ValueError("output must be contiguous")
    if topk_ids is not None:
        topk_ids = check_topk_ids(topk_ids)
        if tuple(topk_ids.shape) != (num_tokens, top_k):
            raise ValueError(
                f"topk_ids must have shape [num_tokens, top_k]={[num_tokens, top_k]}, "
                f"got {list(topk_ids.shape)}"
            )
    elif expert_map is not None:
        raise ValueError("expert_map needs topk_ids: without ids no slot can be mapped")
    _check_map_dtype(expert_map)
    check_bool(programmatic_launch, "programmatic_launch")
    device = check_same_device(
        {"input": input, "output": output, "topk_ids": topk_ids, "expert_map": expert_map}
    )
    if resolve_backend(backend, device) == "triton":
        from moekit.align._triton_impl import reduce as triton_impl

        return triton_impl.moe_sum(input, output, topk_ids, expert_map, programmatic_launch)
    from moekit.align._torch_impl import reduce as torch_impl

    return torch_impl.moe_sum(input, output, topk_ids, expert_map)


def count_expert_num_tokens(
    topk_ids: torch.Tensor,
    num_local_experts: int,
    expert_map: torch.Tensor | None = None,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Number of slots of ``topk_ids [num_tokens, top_k]`` routed to each local expert.

    Without ``expert_map`` the ids are the local ids; with it (int32, global -> local or
    ``-1``) each id is mapped first. Ids outside the map or the local range are not counted.

    Returns:
        ``int32[num_local_experts]`` on ``topk_ids.device``.

    Raises:
        TypeError: non-integer ``topk_ids``, non-int32 ``expert_map``.
        ValueError: ``topk_ids`` not 2-D, ``num_local_experts < 1``.
    """
    topk_ids = check_topk_ids(topk_ids)
    check_positive_int(num_local_experts, "num_local_experts")
    _check_map_dtype(expert_map)
    device = check_same_device({"topk_ids": topk_ids, "expert_map": expert_map})
    if resolve_backend(backend, device) == "triton":
        from moekit.align._triton_impl import reduce as triton_impl

        return triton_impl.count_expert_num_tokens(topk_ids, num_local_experts, expert_map)
    from moekit.align._torch_impl import reduce as torch_impl

    return torch_impl.count_expert_num_tokens(topk_ids, num_local_experts, expert_map)
