"""The policy interface and the maps every policy returns."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from moekit.eplb._checks import ArrayLike, check_int, to_cpu_tensor


class AbstractEplbPolicy(ABC):
    """A placement policy: from measured loads to the physical layout of the expert replicas."""

    @classmethod
    @abstractmethod
    def rebalance_experts(
        cls,
        weight: ArrayLike,
        num_replicas: int,
        num_groups: int,
        num_nodes: int,
        num_ranks: int,
        old_global_expert_indices: ArrayLike | None = None,
    ) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
        """Place ``num_replicas`` replicas of the logical experts on ``num_ranks`` ranks.

        Args:
            weight: ``[num_layers, num_logical]`` loads (tokens per logical expert), finite, >= 0;
                a torch tensor or a NumPy array.
            num_replicas: physical experts, a multiple of ``num_ranks`` and >= ``num_logical``.
            num_groups: expert groups; ``num_logical`` must be a multiple of it.
            num_nodes: server nodes; ``num_ranks`` must be a multiple of it.
            num_ranks: ranks (GPUs); rank ``g`` holds slots ``[g * S, (g + 1) * S)``,
                ``S = num_replicas / num_ranks``.
            old_global_expert_indices: optional ``[num_layers, num_replicas]`` current
                physical-to-logical map, to keep experts in place where possible.

        Returns:
            ``(physical_to_logical_map int64 [L, num_replicas], logical_to_physical_map int64
            [L, num_logical, num_replicas - num_logical + 1]`` (replica ids ascending, ``-1``
            padded), ``expert_count int64 [L, num_logical])``, of the same kind as ``weight``.

        Raises:
            ValueError: a violated precondition, negative or non-finite loads, a wrong ndim or
                an old map of the wrong shape.
        """


def compute_logical_maps(
    physical_to_logical_map: ArrayLike, num_logical: int
) -> tuple[ArrayLike, ArrayLike]:
    """The logical-to-physical map and replica counts of a placement.

    Args:
        physical_to_logical_map: ``[num_layers, num_replicas]`` integer logical ids in
            ``[0, num_logical)``, every logical expert present at least once per layer.
        num_logical: the number of logical experts.

    Returns:
        ``(logical_to_physical_map int64 [L, num_logical, num_replicas - num_logical + 1]``
        with each expert's physical ids ascending and ``-1`` after them, ``expert_count int64
        [L, num_logical])``, of the same kind (torch or NumPy) as the input.

    Raises:
        ValueError: a map that is not 2-D, ids out of range, or an expert without a replica.
    """
    num_logical = check_int(num_logical, "num_logical", 1)
    tensor, as_numpy, device = to_cpu_tensor(physical_to_logical_map, "physical_to_logical_map")
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise TypeError(f"physical_to_logical_map must hold integer ids, got {tensor.dtype}")
    if tensor.dim() != 2:
        raise ValueError(f"physical_to_logical_map must be 2-D [num_layers, num_replicas], got "
                         f"{tensor.dim()}-D")  # fmt: skip
    tensor = tensor.to(torch.int64)
    if tensor.numel() and (tensor.min() < 0 or tensor.max() >= num_logical):
        raise ValueError(f"physical_to_logical_map must hold ids in [0, {num_logical}), got "
                         f"[{tensor.min().item()}, {tensor.max().item()}]")  # fmt: skip
    l2p, count = logical_maps(tensor, num_logical)
    if (count == 0).any():
        layer, expert = (count == 0).nonzero()[0].tolist()
        raise ValueError(f"physical_to_logical_map gives logical expert {expert} no replica "
                         f"in layer {layer}")  # fmt: skip
    if as_numpy:
        return l2p.numpy(), count.numpy()
    return l2p.to(device), count.to(device)


def logical_maps(p2l: torch.Tensor, num_logical: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked core of :func:`compute_logical_maps` on int64 CPU tensors."""
    num_layers, num_replicas = p2l.shape
    width = max(num_replicas - num_logical + 1, 1)
    count = torch.zeros(num_layers, num_logical, dtype=torch.int64)
    count.scatter_add_(1, p2l, torch.ones_like(p2l))
    # A stable sort by logical id keeps each expert's physical ids ascending.
    order = torch.sort(p2l, dim=1, stable=True).indices
    starts = torch.cumsum(count, dim=1) - count
    sorted_ids = torch.gather(p2l, 1, order)
    rank = torch.arange(num_replicas).expand(num_layers, -1) - torch.gather(starts, 1, sorted_ids)
    l2p = torch.full((num_layers, num_logical * width), -1, dtype=torch.int64)
    fits = rank < width
    layer_index = torch.arange(num_layers)[:, None].expand(-1, num_replicas)
    l2p[layer_index[fits], (sorted_ids * width + rank)[fits]] = order[fits]
    return l2p.view(num_layers, num_logical, width), count
