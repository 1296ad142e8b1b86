"""Input validation shared by the public ops: every check runs before any kernel launch."""

from __future__ import annotations

import torch

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(value: object, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_topk_ids(topk_ids: object, name: str = "topk_ids") -> torch.Tensor:
    """``topk_ids`` must be a 2-D integer tensor ``[num_tokens, top_k]``."""
    tensor = check_tensor(topk_ids, name)
    if tensor.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"{name} must have an integer dtype, got {tensor.dtype}")
    if tensor.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D [num_tokens, top_k], got {tensor.dim()}-D {tuple(tensor.shape)}"
        )
    return tensor


def check_floating(value: object, name: str) -> torch.Tensor:
    tensor = check_tensor(value, name)
    if tensor.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype {_FLOAT_DTYPES}, got {tensor.dtype}")
    return tensor


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_expert_map(
    expert_map: object, num_experts: int, *, name: str = "expert_map"
) -> torch.Tensor:
    """``expert_map``: int32 ``[num_experts]``, global id -> local id in ``[0, num_experts)`` or -1.

    The values are checked only when the map lives on the CPU: reading a GPU map would stall
    the stream on every call. The kernels treat an out-of-range GPU value as ``-1`` (never an
    out-of-bounds access); use :func:`moekit.align.validate_expert_map` once at setup.
    """
    tensor = check_tensor(expert_map, name)
    if tensor.dtype != torch.int32:
        raise TypeError(f"{name} must be int32, got {tensor.dtype}")
    if tensor.dim() != 1 or tensor.shape[0] != num_experts:
        raise ValueError(
            f"{name} must have shape [num_experts={num_experts}], got {tuple(tensor.shape)}"
        )
    if tensor.device.type == "cpu":
        check_expert_map_values(tensor, num_experts, name=name)
    return tensor


def check_expert_map_values(expert_map: torch.Tensor, num_experts: int, *, name: str) -> None:
    if expert_map.numel() == 0:
        return
    low, high = int(expert_map.min()), int(expert_map.max())
    if low < -1 or high >= num_experts:
        raise ValueError(
            f"{name} values must be -1 or a local id in [0, {num_experts}), "
            f"got values in [{low}, {high}]"
        )
    local = expert_map[expert_map >= 0]
    if torch.unique(local).numel() != local.numel():
        raise ValueError(f"{name} maps two global experts to the same local expert")


def check_same_device(tensors: dict[str, torch.Tensor | None]) -> torch.device:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    first_name, first = next(iter(devices.items()))
    for name, device in devices.items():
        if device != first:
            raise ValueError(f"{name} is on {device} but {first_name} is on {first}")
    return first
