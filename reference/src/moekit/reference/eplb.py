"""The EPLB default policy, metrics and routing hook in plain NumPy, one layer at a time.

Loads are float32 as the spec says (sums accumulate in float32, item by item); maps are int64.
Written for reading, not speed: plain loops over layers, items and slots.
"""

from __future__ import annotations

import numpy as np

HASH_MULTIPLIER = 2654435769


def balanced_packing_row(weight: np.ndarray, num_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """One row: visit items by descending weight (ties: lower index first), each into the
    least-loaded pack with room (first minimum); returns (pack_index, rank_in_pack)."""
    n = len(weight)
    capacity = n // num_packs
    if capacity == 1:
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float32)
    order = sorted(range(n), key=lambda i: (-float(weight[i]), i))
    load = [np.float32(0)] * num_packs
    fill = [0] * num_packs
    pack_index = np.empty(n, dtype=np.int64)
    rank_in_pack = np.empty(n, dtype=np.int64)
    for item in order:
        open_packs = [p for p in range(num_packs) if fill[p] < capacity]
        pack = min(open_packs, key=lambda p: (load[p], p))
        pack_index[item] = pack
        rank_in_pack[item] = fill[pack]
        load[pack] = np.float32(load[pack] + weight[item])
        fill[pack] += 1
    return pack_index, rank_in_pack


def replicate_experts_row(weight: np.ndarray, num_physical: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One row: each extra replica goes to argmax(weight / count) (first maximum)."""
    weight = np.asarray(weight, dtype=np.float32)
    n = len(weight)
    phy2log = list(range(n))
    rank = [0] * n
    count = np.ones(n, dtype=np.int64)
    for _ in range(n, num_physical):
        per_replica = weight / count.astype(np.float32)
        chosen = int(np.argmax(per_replica))
        phy2log.append(chosen)
        rank.append(int(count[chosen]))
        count[chosen] += 1
    return np.array(phy2log, dtype=np.int64), np.array(rank, dtype=np.int64), count


def hierarchical_row(weight: np.ndarray, num_physical: int, num_groups: int, num_nodes: int,
                     num_gpus: int) -> np.ndarray:  # fmt: skip
    """One layer of the hierarchical policy; returns the physical-to-logical row."""
    weight = np.asarray(weight, dtype=np.float32)
    n = len(weight)
    group_size = n // num_groups
    groups_per_node = num_groups // num_nodes
    per_node = n // num_nodes
    slots_per_gpu = num_physical // num_gpus
    gpus_per_node = num_gpus // num_nodes
    group_load = np.array([np.sum(weight[g * group_size : (g + 1) * group_size], dtype=np.float32)
                           for g in range(num_groups)], dtype=np.float32)  # fmt: skip
    group_node, group_rank = balanced_packing_row(group_load, num_nodes)
    # Node-major order of the logical experts.
    node_order = np.empty(n, dtype=np.int64)  # position -> logical expert
    for g in range(num_groups):
        start = (group_node[g] * groups_per_node + group_rank[g]) * group_size
        node_order[start : start + group_size] = np.arange(g * group_size, (g + 1) * group_size)
    row = np.empty(num_physical, dtype=np.int64)
    slots_per_node = num_physical // num_nodes
    for node in range(num_nodes):
        experts = node_order[node * per_node : (node + 1) * per_node]
        node_weight = weight[experts]
        phy2local, _, count = replicate_experts_row(node_weight, slots_per_node)
        replica_load = (node_weight / count.astype(np.float32))[phy2local]
        gpu, position = balanced_packing_row(replica_load, gpus_per_node)
        for replica in range(slots_per_node):
            slot = node * slots_per_node + gpu[replica] * slots_per_gpu + position[replica]
            row[slot] = experts[phy2local[replica]]
    return row


def preserve_slots_row(new_row: np.ndarray, old_row: np.ndarray, num_ranks: int) -> np.ndarray:
    """Experts staying on a rank keep their old slot (first match); freed slots, ascending,
    take the remaining new experts in ascending id."""
    per_rank = len(new_row) // num_ranks
    out = np.empty_like(new_row)
    for rank in range(num_ranks):
        span = slice(rank * per_rank, (rank + 1) * per_rank)
        remaining = sorted(new_row[span].tolist())
        slots: list[int | None] = [None] * per_rank
        for offset, expert in enumerate(old_row[span].tolist()):
            if expert in remaining:
                slots[offset] = expert
                remaining.remove(expert)
        rest = iter(remaining)
        out[span] = [e if e is not None else next(rest) for e in slots]
    return out


def logical_maps(p2l: np.ndarray, num_logical: int) -> tuple[np.ndarray, np.ndarray]:
    """(logical_to_physical [L, N, R - N + 1] ascending, -1 padded; counts [L, N])."""
    num_layers, num_replicas = p2l.shape
    width = num_replicas - num_logical + 1
    l2p = np.full((num_layers, num_logical, width), -1, dtype=np.int64)
    count = np.zeros((num_layers, num_logical), dtype=np.int64)
    for layer in range(num_layers):
        for slot in range(num_replicas):
            expert = p2l[layer, slot]
            l2p[layer, expert, count[layer, expert]] = slot
            count[layer, expert] += 1
    return l2p, count


def rebalance_experts(weight: np.ndarray, num_replicas: int, num_groups: int, num_nodes: int,
                      num_ranks: int, old_global_expert_indices: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The default policy: hierarchical when ``num_groups % num_nodes == 0``, else global;
    slots preserved against the old map when given."""
    weight = np.asarray(weight, dtype=np.float32)
    rows = []
    for layer in range(weight.shape[0]):
        if num_groups % num_nodes == 0:
            row = hierarchical_row(weight[layer], num_replicas, num_groups, num_nodes, num_ranks)
        else:
            row = hierarchical_row(weight[layer], num_replicas, 1, 1, num_ranks)
        if old_global_expert_indices is not None:
            row = preserve_slots_row(row, np.asarray(old_global_expert_indices)[layer], num_ranks)
        rows.append(row)
    p2l = np.stack(rows)
    l2p, count = logical_maps(p2l, weight.shape[1])
    return p2l, l2p, count


def rank_load(weight: np.ndarray, p2l: np.ndarray, num_ranks: int) -> np.ndarray:
    """float64 [L, num_ranks]: each replica carries weight[e] / count[e]."""
    weight = np.asarray(weight, dtype=np.float64)
    num_layers, num_replicas = p2l.shape
    per_rank = num_replicas // num_ranks
    load = np.zeros((num_layers, num_ranks))
    for layer in range(num_layers):
        count = np.bincount(p2l[layer], minlength=weight.shape[1])
        for slot in range(num_replicas):
            expert = p2l[layer, slot]
            load[layer, slot // per_rank] += weight[layer, expert] / count[expert]
    return load


def balancedness(load: np.ndarray) -> np.ndarray:
    """mean / max per layer (1.0 for an unloaded layer)."""
    load = np.asarray(load, dtype=np.float64)
    return np.array([row.mean() / row.max() if row.max() > 0 else 1.0 for row in load])


def aggregate_balancedness(load: np.ndarray) -> float:
    """sum over layers of the mean / sum over layers of the max."""
    load = np.asarray(load, dtype=np.float64)
    peak = load.max(axis=1).sum()
    return float(load.mean(axis=1).sum() / peak) if peak > 0 else 1.0


def map_to_physical_and_record(topk_ids: np.ndarray, l2p: np.ndarray, count: np.ndarray,
                               num_replicas: int, num_valid_tokens: int | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(physical ids like topk_ids, int64 [num_replicas] recorded load) for one layer."""
    num_tokens, top_k = topk_ids.shape
    valid_tokens = num_tokens if num_valid_tokens is None else num_valid_tokens
    physical = np.full(topk_ids.shape, -1, dtype=np.int64)
    load = np.zeros(num_replicas, dtype=np.int64)
    for token in range(num_tokens):
        for k in range(top_k):
            expert = int(topk_ids[token, k])
            if not 0 <= expert < l2p.shape[0]:
                continue
            replica = ((token * HASH_MULTIPLIER) & 0xFFFFFFFF) % max(int(count[expert]), 1)
            physical[token, k] = l2p[expert, replica]
            if token < valid_tokens and physical[token, k] >= 0:
                load[physical[token, k]] += 1
    return physical.astype(topk_ids.dtype), load
