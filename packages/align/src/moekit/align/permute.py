"""Public ``moe_permute`` and ``moe_unpermute``."""

from __future__ import annotations

import torch

from moekit.align._backend import Backend, resolve_backend
from moekit.align._checks import (
    check_expert_map,
    check_floating,
    check_positive_int,
    check_same_device,
    check_tensor,
    check_topk_ids,
)


def moe_permute(
    hidden_states: torch.Tensor,
    topk_ids: torch.Tensor,
    num_experts: int,
    expert_map: torch.Tensor | None = None,
    num_local_experts: int | None = None,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group the rows of every routed slot by local expert (a **stable** sort).

    Flat slot ``i = t * top_k + j`` goes to the segment of its local expert (``topk_ids[t, j]``,
    mapped through ``expert_map`` when given); slots of no local expert come last, all in
    ascending ``i``.

    Args:
        hidden_states: ``[num_tokens, K]``, any floating dtype.
        topk_ids: ``[num_tokens, top_k]`` integer global ids.
        num_experts: global number of experts.
        expert_map: optional int32 ``[num_experts]``, global -> local id or ``-1``.
        num_local_experts: local experts; defaults to ``num_experts`` without a map and to
            ``max(expert_map) + 1`` with one (a device read: pass it on GPUs).

    Returns:
        ``(permuted [T*top_k, K], expert_first_token_offset int64[num_local_experts + 1],
        inv_permuted_idx int32[T*top_k], permuted_idx int32[T*top_k])`` with
        ``permuted[p] = hidden_states[permuted_idx[p] // top_k]`` and
        ``inv_permuted_idx[permuted_idx[p]] = p``.

    Raises:
        TypeError / ValueError: bad dtypes or shapes, ``num_local_experts`` inconsistent with
            the map.
    """
    hidden_states = check_floating(hidden_states, "hidden_states")
    topk_ids = check_topk_ids(topk_ids)
    check_positive_int(num_experts, "num_experts")
    if hidden_states.dim() != 2 or hidden_states.shape[0] != topk_ids.shape[0]:
        raise ValueError(
            f"hidden_states must be [num_tokens={topk_ids.shape[0]}, K], "
            f"got {tuple(hidden_states.shape)}"
        )
    if expert_map is None:
        if num_local_experts not in (None, num_experts):
            raise ValueError(
                f"num_local_experts={num_local_experts} differs from num_experts={num_experts} "
                "but no expert_map says which experts are local"
            )
        num_local_experts = num_experts
    else:
        expert_map = check_expert_map(expert_map, num_experts)
        highest_local = (
            int(expert_map.max())
            if num_local_experts is None or (expert_map.device.type == "cpu")
            else -1
        )
        if num_local_experts is None:
            num_local_experts = max(highest_local + 1, 1)
        check_positive_int(num_local_experts, "num_local_experts")
        if highest_local >= num_local_experts:
            raise ValueError(
                f"expert_map holds local id {highest_local} but num_local_experts is "
                f"{num_local_experts}"
            )
    device = check_same_device(
        {"hidden_states": hidden_states, "topk_ids": topk_ids, "expert_map": expert_map}
    )
    args = (hidden_states, topk_ids, num_experts, expert_map, num_local_experts)
    if resolve_backend(backend, device) == "triton":
        from moekit.align._triton_impl import permute as triton_impl

        return triton_impl.moe_permute(*args)
    from moekit.align._torch_impl import permute as torch_impl

    return torch_impl.moe_permute(*args)


def moe_unpermute(
    permuted: torch.Tensor,
    topk_weights: torch.Tensor,
    inv_permuted_idx: torch.Tensor,
    expert_first_token_offset: torch.Tensor,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Weighted sum of each token's expert rows: the inverse of :func:`moe_permute`.

    ``out[t] = sum_j topk_weights[t, j] * permuted[inv_permuted_idx[t*top_k + j]]`` over the
    slots whose row is local (``< expert_first_token_offset[-1]``); float32 accumulation.

    Args:
        permuted: ``[T*top_k, K]`` floating rows (e.g. expert outputs in permuted order).
        topk_weights: ``[T, top_k]`` floating weights.
        inv_permuted_idx: ``[T*top_k]`` integer, from :func:`moe_permute`.
        expert_first_token_offset: ``int64[num_local_experts + 1]``, from :func:`moe_permute`.

    Returns:
        ``[T, K]`` in ``permuted.dtype``.
    """
    permuted = check_floating(permuted, "permuted")
    topk_weights = check_floating(topk_weights, "topk_weights")
    inv = check_tensor(inv_permuted_idx, "inv_permuted_idx")
    offsets = check_tensor(expert_first_token_offset, "expert_first_token_offset")
    if topk_weights.dim() != 2:
        raise ValueError(f"topk_weights must be 2-D [T, top_k], got {tuple(topk_weights.shape)}")
    numel = topk_weights.numel()
    if permuted.dim() != 2 or permuted.shape[0] != numel:
        raise ValueError(f"permuted must be [T*top_k={numel}, K], got {tuple(permuted.shape)}")
    if inv.dtype.is_floating_point or inv.numel() != numel:
        raise ValueError(
            f"inv_permuted_idx must be integer with {numel} elements, got {inv.dtype} "
            f"{tuple(inv.shape)}"
        )
    if offsets.dtype != torch.int64 or offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(
            "expert_first_token_offset must be a non-empty 1-D int64 tensor, "
            f"got {offsets.dtype} {tuple(offsets.shape)}"
        )
    device = check_same_device(
        {
            "permuted": permuted,
            "topk_weights": topk_weights,
            "inv_permuted_idx": inv,
            "expert_first_token_offset": offsets,
        }
    )
    args = (permuted, topk_weights, inv.reshape(-1), offsets)
    if resolve_backend(backend, device) == "triton":
        from moekit.align._triton_impl import permute as triton_impl

        return triton_impl.moe_unpermute(*args)
    from moekit.align._torch_impl import permute as torch_impl

    return torch_impl.moe_unpermute(*args)
