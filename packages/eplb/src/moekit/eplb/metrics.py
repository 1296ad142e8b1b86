"""How balanced a placement is, and how many replicas a change of placement moves.

All functions take torch tensors or NumPy arrays and return NumPy (float64 loads): they are
host-side measurements, not kernels.
"""

from __future__ import annotations

import numpy as np
import torch

from moekit.eplb._checks import ArrayLike, check_int, check_physical_map, check_weight


def rank_load(weight: ArrayLike, physical_to_logical_map: ArrayLike, num_ranks: int) -> np.ndarray:
    """The load of each rank under a placement.

    A replica of expert ``e`` with ``r_e`` replicas carries ``weight[e] / r_e``; rank ``g`` holds
    slots ``[g * S, (g + 1) * S)``, ``S = num_replicas / num_ranks``.

    Args:
        weight: ``[L, num_logical]`` loads, finite and >= 0.
        physical_to_logical_map: ``[L, num_replicas]`` logical ids, every expert present.
        num_ranks: divides ``num_replicas``.

    Returns:
        ``float64 [L, num_ranks]``.
    """
    loads = check_weight(weight, dtype=torch.float64)[0].numpy()
    num_layers, num_logical = loads.shape
    p2l = np.asarray(physical_to_logical_map if isinstance(physical_to_logical_map, np.ndarray)
                     else physical_to_logical_map.cpu().numpy())  # fmt: skip
    if p2l.ndim != 2:
        raise ValueError(f"physical_to_logical_map must be 2-D, got {p2l.ndim}-D")
    p2l = check_physical_map(p2l, num_layers, p2l.shape[1], num_logical,
                             "physical_to_logical_map").numpy()  # fmt: skip
    num_ranks = check_int(num_ranks, "num_ranks", 1)
    num_replicas = p2l.shape[1]
    if num_replicas % num_ranks:
        raise ValueError(f"num_ranks ({num_ranks}) must divide num_replicas ({num_replicas})")
    count = np.zeros((num_layers, num_logical), dtype=np.int64)
    for layer in range(num_layers):
        count[layer] = np.bincount(p2l[layer], minlength=num_logical)
    if (count == 0).any():
        layer, expert = np.argwhere(count == 0)[0]
        raise ValueError(f"physical_to_logical_map gives logical expert {expert} no replica in "
                         f"layer {layer}")  # fmt: skip
    per_replica = np.take_along_axis(loads / count, p2l, axis=1)
    return per_replica.reshape(num_layers, num_ranks, -1).sum(axis=2)


def _as_load(load: ArrayLike) -> np.ndarray:
    return check_weight(load, "load", torch.float64)[0].numpy()


def balancedness(load: ArrayLike) -> np.ndarray:
    """``mean / max`` of each layer's rank loads (``[L, num_ranks]``); 1.0 is perfect, a layer
    with no load counts as 1.0. Returns ``float64 [L]``."""
    array = _as_load(load)
    peak = array.max(axis=1)
    return np.where(peak > 0, array.mean(axis=1) / np.where(peak > 0, peak, 1), 1.0)


def imbalance(load: ArrayLike) -> np.ndarray:
    """``max / mean`` of each layer's rank loads (the inverse of :func:`balancedness`).
    Returns ``float64 [L]``."""
    return 1.0 / balancedness(load)


def aggregate_balancedness(load: ArrayLike) -> float:
    """vLLM's aggregate over layers: ``sum_l mean_l / sum_l max_l`` (1.0 when all is zero)."""
    array = _as_load(load)
    peak = array.max(axis=1).sum()
    return float(array.mean(axis=1).sum() / peak) if peak > 0 else 1.0


def replica_moves(old_physical_to_logical: ArrayLike, new_physical_to_logical: ArrayLike,
                  num_ranks: int) -> np.ndarray:  # fmt: skip
    """Replicas that must be copied onto a rank to go from the old placement to the new one.

    Per layer and rank, the count of new replicas whose expert the rank does not already hold
    (a multiset difference: a rank keeping one copy of ``e`` and gaining a second moves one).
    Slot order inside a rank does not count. Returns ``int64 [L]``.
    """
    old = np.asarray(old_physical_to_logical if isinstance(old_physical_to_logical, np.ndarray)
                     else old_physical_to_logical.cpu().numpy())  # fmt: skip
    new = np.asarray(new_physical_to_logical if isinstance(new_physical_to_logical, np.ndarray)
                     else new_physical_to_logical.cpu().numpy())  # fmt: skip
    if old.shape != new.shape or old.ndim != 2:
        raise ValueError(f"the old and new maps must be 2-D of one shape, got {old.shape} and "
                         f"{new.shape}")  # fmt: skip
    num_ranks = check_int(num_ranks, "num_ranks", 1)
    if old.shape[1] % num_ranks:
        raise ValueError(f"num_ranks ({num_ranks}) must divide num_replicas ({old.shape[1]})")
    size = int(max(old.max(initial=0), new.max(initial=0))) + 1
    moves = np.zeros(old.shape[0], dtype=np.int64)
    for layer in range(old.shape[0]):
        for old_slots, new_slots in zip(np.split(old[layer], num_ranks),
                                        np.split(new[layer], num_ranks)):  # fmt: skip
            had = np.bincount(old_slots, minlength=size)
            has = np.bincount(new_slots, minlength=size)
            moves[layer] += np.maximum(has - had, 0).sum()
    return moves
