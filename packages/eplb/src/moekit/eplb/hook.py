"""``map_to_physical_and_record``: the routing hook that turns logical expert ids into physical
replicas and records the load EPLB balances."""

from __future__ import annotations

import torch

from moekit.eplb._backend import Backend, resolve_backend
from moekit.eplb._torch_hook import map_to_physical_torch

_ID_DTYPES = (torch.int32, torch.int64)
_BLOCK = 1024


def _check_int_tensor(tensor: object, name: str, ndim: int) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _ID_DTYPES:
        raise TypeError(f"{name} must be int32 or int64, got {tensor.dtype}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {tensor.dim()}-D {tuple(tensor.shape)}")
    return tensor


def map_to_physical_and_record(
    topk_ids: torch.Tensor,
    logical_to_physical_map: torch.Tensor,
    logical_replica_count: torch.Tensor,
    expert_load: torch.Tensor | None = None,
    num_valid_tokens: int | None = None,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Map each slot's logical expert to one of its replicas, and count the load per replica.

    For flat slot ``i`` (token ``t = i // top_k``) with a valid id ``e``, the replica is
    ``r = ((t * 2654435769) & 0xFFFFFFFF) % max(count[e], 1)`` and the physical id
    ``logical_to_physical_map[e, r]``; ids outside ``[0, num_logical)`` give ``-1``. When
    ``expert_load`` is given, ``expert_load[physical] += 1`` for every valid slot of the first
    ``num_valid_tokens`` tokens (padding tokens after them are not counted).

    Args:
        topk_ids: ``[num_tokens, top_k]`` int32/int64 logical ids (``-1`` allowed).
        logical_to_physical_map: ``[num_logical, X]`` int32/int64, one layer's map.
        logical_replica_count: ``[num_logical]`` int32/int64 replicas per expert.
        expert_load: optional ``[num_replicas]`` int32/int64, added to in place.
        num_valid_tokens: tokens to record (default: all).
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        ``[num_tokens, top_k]`` physical ids, ``topk_ids``'s dtype.

    Raises:
        TypeError: a non-tensor or a non-integer dtype.
        ValueError: mismatched shapes or devices, a negative ``num_valid_tokens``, or (CPU
            tensors, where checking is free) replica counts above the map's width.
    """
    topk_ids = _check_int_tensor(topk_ids, "topk_ids", 2)
    l2p = _check_int_tensor(logical_to_physical_map, "logical_to_physical_map", 2)
    count = _check_int_tensor(logical_replica_count, "logical_replica_count", 1)
    if count.shape[0] != l2p.shape[0]:
        raise ValueError(f"logical_replica_count must have num_logical={l2p.shape[0]} entries "
                         f"like logical_to_physical_map, got {count.shape[0]}")  # fmt: skip
    tensors = {"logical_to_physical_map": l2p, "logical_replica_count": count}
    if expert_load is not None:
        tensors["expert_load"] = _check_int_tensor(expert_load, "expert_load", 1)
        if not expert_load.is_contiguous():
            raise ValueError("expert_load must be contiguous (it is written in place)")
    for name, tensor in tensors.items():
        if tensor.device != topk_ids.device:
            raise ValueError(f"{name} is on {tensor.device} but topk_ids is on {topk_ids.device}")
    num_tokens = topk_ids.shape[0]
    if num_valid_tokens is None:
        num_valid_tokens = num_tokens
    if isinstance(num_valid_tokens, bool) or not isinstance(num_valid_tokens, int):
        raise TypeError(f"num_valid_tokens must be an int or None, got "
                        f"{type(num_valid_tokens).__name__}")  # fmt: skip
    if num_valid_tokens < 0:
        raise ValueError(f"num_valid_tokens must be >= 0, got {num_valid_tokens}")
    if count.device.type == "cpu" and count.numel() and int(count.max()) > l2p.shape[1]:
        raise ValueError(f"logical_replica_count holds {int(count.max())} replicas but "
                         f"logical_to_physical_map has only {l2p.shape[1]} columns")  # fmt: skip
    path = resolve_backend(backend, topk_ids.device)
    if topk_ids.numel() == 0:
        return torch.empty_like(topk_ids)
    if path == "torch":
        return map_to_physical_torch(topk_ids, l2p, count, expert_load, num_valid_tokens)
    from moekit.eplb._triton_impl.hook_kernel import map_to_physical_kernel

    flat = topk_ids.contiguous()
    out = torch.empty_like(flat)
    num_slots = flat.numel()
    map_to_physical_kernel[(-(-num_slots // _BLOCK),)](
        flat, l2p.contiguous(), count.contiguous(), out,
        expert_load if expert_load is not None else out, num_slots, topk_ids.shape[1],
        l2p.shape[0], l2p.shape[1], num_valid_tokens,
        RECORD=expert_load is not None, BLOCK=_BLOCK,
    )  # fmt: skip
    return out
