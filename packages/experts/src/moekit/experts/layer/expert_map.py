"""Which experts a rank of an expert-parallel group holds: ``determine_expert_map``."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from moekit.experts._checks import check_int

ExpertPlacement = Literal["linear", "round_robin"]
PLACEMENTS: tuple[str, ...] = ("linear", "round_robin")


class ExpertMapping(NamedTuple):
    """What :func:`determine_expert_map` returns.

    Attributes:
        num_local_experts: experts on this rank.
        expert_map: int32 ``[num_experts]``, global id -> local id or ``-1``; ``None`` when
            ``ep_size == 1`` (every expert is local and ids need no mapping).
        local_expert_ids: int32 ``[num_local_experts]``, the global id of each local expert in
            local order (the inverse of ``expert_map`` on this rank).
    """

    num_local_experts: int
    expert_map: torch.Tensor | None
    local_expert_ids: torch.Tensor


def determine_expert_map(ep_size: int, ep_rank: int, num_experts: int,
                         strategy: ExpertPlacement = "linear") -> ExpertMapping:  # fmt: skip
    """Place ``num_experts`` experts on ``ep_size`` ranks and describe rank ``ep_rank``'s share.

    With ``base, rem = divmod(num_experts, ep_size)``, rank ``r`` holds ``base + (r < rem)``
    experts: ``"linear"`` gives it the contiguous ids from ``r * base + min(r, rem)``;
    ``"round_robin"`` gives it ``r, r + ep_size, r + 2 * ep_size, ...``.

    Args:
        ep_size: ranks of the expert-parallel group (``>= 1``).
        ep_rank: this rank, ``0 <= ep_rank < ep_size``.
        num_experts: global experts (``>= 1``).
        strategy: ``"linear"`` or ``"round_robin"``.

    Returns:
        An :class:`ExpertMapping` ``(num_local_experts, expert_map, local_expert_ids)``. A rank
        may hold no expert when ``ep_size > num_experts``.

    Raises:
        TypeError: a count that is not an int.
        ValueError: a count out of range or an unknown strategy.
    """
    ep_size = check_int(ep_size, "ep_size", 1)
    ep_rank = check_int(ep_rank, "ep_rank", 0)
    num_experts = check_int(num_experts, "num_experts", 1)
    if ep_rank >= ep_size:
        raise ValueError(f"ep_rank must be in [0, ep_size={ep_size}), got {ep_rank}")
    if strategy not in PLACEMENTS:
        raise ValueError(f"strategy must be one of {PLACEMENTS}, got {strategy!r}")
    base, rem = divmod(num_experts, ep_size)
    num_local = base + (ep_rank < rem)
    if strategy == "linear":
        start = ep_rank * base + min(ep_rank, rem)
        local_ids = torch.arange(start, start + num_local, dtype=torch.int32)
    else:
        local_ids = torch.arange(num_local, dtype=torch.int32) * ep_size + ep_rank
    if ep_size == 1:
        return ExpertMapping(num_local, None, local_ids)
    expert_map = torch.full((num_experts,), -1, dtype=torch.int32)
    expert_map[local_ids.long()] = torch.arange(num_local, dtype=torch.int32)
    return ExpertMapping(num_local, expert_map, local_ids)
