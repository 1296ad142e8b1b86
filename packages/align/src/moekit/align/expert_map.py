"""Validation of an expert map, for engines to call once at setup (it reads the map on the host)."""

from __future__ import annotations

import torch

from moekit.align._checks import check_expert_map, check_expert_map_values


def validate_expert_map(expert_map: torch.Tensor, num_experts: int) -> None:
    """Check ``expert_map`` (int32 ``[num_experts]``): each value ``-1`` or a distinct local id.

    The ops check the values of CPU maps on every call but only the shape and dtype of GPU maps
    (a value check would stall the stream); call this once when a GPU map is built.

    Raises:
        TypeError: not an int32 tensor.
        ValueError: wrong shape, a value below ``-1`` or ``>= num_experts``, a repeated local id.
    """
    check_expert_map(expert_map, num_experts)
    check_expert_map_values(expert_map.cpu(), num_experts, name="expert_map")
