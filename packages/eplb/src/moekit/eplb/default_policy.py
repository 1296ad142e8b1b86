"""DeepSeek's hierarchical greedy placement, with vLLM's tie-breaking and float32 loads.

All steps run on CPU torch tensors, batched over the rows (layers) where the step allows it.
"""

from __future__ import annotations

import torch

from moekit.eplb._checks import ArrayLike, check_int, check_problem
from moekit.eplb.policy import AbstractEplbPolicy, logical_maps


def balanced_packing(weight: torch.Tensor, num_packs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack ``n`` weighted items into ``num_packs`` packs of ``n / num_packs`` items each.

    Per row, items are visited by descending weight (stable: ties keep the lower index first)
    and each goes to the least-loaded pack that still has room (the first minimum wins).

    Args:
        weight: ``[X, n]`` float32 CPU tensor; ``n`` a multiple of ``num_packs``.
        num_packs: the number of packs.

    Returns:
        ``(pack_index int64 [X, n], rank_in_pack int64 [X, n])``: each item's pack and its
        position there (the pack's fill count when the item went in).
    """
    rows, num_items = weight.shape
    num_packs = check_int(num_packs, "num_packs", 1)
    if num_items % num_packs:
        raise ValueError(f"the number of items ({num_items}) must be a multiple of num_packs "
                         f"({num_packs})")  # fmt: skip
    capacity = num_items // num_packs
    if capacity == 1:
        identity = torch.arange(num_items, dtype=torch.int64).expand(rows, -1).clone()
        return identity, torch.zeros(rows, num_items, dtype=torch.int64)
    weight = weight.to(torch.float32)
    order = torch.sort(weight, dim=1, descending=True, stable=True).indices
    pack_load = torch.zeros(rows, num_packs, dtype=torch.float32)
    pack_fill = torch.zeros(rows, num_packs, dtype=torch.int64)
    pack_index = torch.empty(rows, num_items, dtype=torch.int64)
    rank_in_pack = torch.empty(rows, num_items, dtype=torch.int64)
    row = torch.arange(rows)
    full = torch.tensor(float("inf"))
    for step in range(num_items):
        item = order[:, step]
        # argmin returns the first minimum; full packs are out of the running.
        pack = torch.where(pack_fill < capacity, pack_load, full).argmin(dim=1)
        pack_index[row, item] = pack
        rank_in_pack[row, item] = pack_fill[row, pack]
        pack_load[row, pack] += weight[row, item]
        pack_fill[row, pack] += 1
    return pack_index, rank_in_pack


def replicate_experts(weight: torch.Tensor, num_physical: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Give ``num_physical - n_log`` extra replicas, one at a time, to the expert with the
    largest load per replica (``argmax(weight / count)``, the first maximum).

    Args:
        weight: ``[X, n_log]`` float32 CPU tensor.
        num_physical: the number of replicas, ``>= n_log``.

    Returns:
        ``(phy2log int64 [X, num_physical], rank int64 [X, num_physical], logcnt int64
        [X, n_log])``: the logical expert of each replica (the first ``n_log`` are ``0..n_log-1``),
        its replica rank, and each expert's replica count.
    """
    rows, num_logical = weight.shape
    if num_physical < num_logical:
        raise ValueError(f"num_physical ({num_physical}) must be >= the number of experts "
                         f"({num_logical})")  # fmt: skip
    weight = weight.to(torch.float32)
    phy2log = torch.arange(num_physical, dtype=torch.int64).expand(rows, -1).clone()
    rank = torch.zeros(rows, num_physical, dtype=torch.int64)
    logcnt = torch.ones(rows, num_logical, dtype=torch.int64)
    row = torch.arange(rows)
    for slot in range(num_logical, num_physical):
        chosen = (weight / logcnt).argmax(dim=1)
        phy2log[:, slot] = chosen
        rank[:, slot] = logcnt[row, chosen]
        logcnt[row, chosen] += 1
    return phy2log, rank, logcnt


def _inverse(permutation: torch.Tensor) -> torch.Tensor:
    inverse = torch.empty_like(permutation)
    positions = torch.arange(permutation.shape[1], dtype=torch.int64).expand_as(permutation)
    return inverse.scatter_(1, permutation, positions)


def rebalance_experts_hierarchical(
    weight: torch.Tensor, num_physical: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three steps of the hierarchical policy on ``[L, n_log]`` float32 CPU loads:

    1. pack the expert groups (sums of ``n_log / num_groups`` contiguous experts) onto nodes;
    2. inside each node, replicate its experts to ``num_physical / num_nodes`` slots;
    3. pack the per-replica loads ``weight / count`` onto the node's ``num_gpus / num_nodes``
       GPUs, and map back to logical ids.

    Returns:
        ``(phy2log int64 [L, num_physical], phyrank int64 [L, num_physical], logcnt int64
        [L, n_log])``.
    """
    num_layers, num_logical = weight.shape
    group_size = num_logical // num_groups
    groups_per_node = num_groups // num_nodes
    logical_per_node = num_logical // num_nodes
    slots_per_gpu = num_physical // num_gpus

    group_load = weight.unflatten(-1, (num_groups, group_size)).sum(-1)
    group_pack, group_rank = balanced_packing(group_load, num_nodes)
    # Node-major ("meta-logical") order: node 0's groups first, each group's experts contiguous.
    group_start = (group_pack * groups_per_node + group_rank) * group_size
    log2mlog = (group_start.unsqueeze(-1) + torch.arange(group_size)).flatten(-2)
    mlog2log = _inverse(log2mlog)

    node_weight = weight.gather(-1, mlog2log).view(-1, logical_per_node)
    phy2mlog, phyrank, mlogcnt = replicate_experts(node_weight, num_physical // num_nodes)

    replica_load = (node_weight / mlogcnt).gather(-1, phy2mlog)
    gpu_pack, gpu_rank = balanced_packing(replica_load, num_gpus // num_nodes)
    pphy2phy = _inverse(gpu_pack * slots_per_gpu + gpu_rank)

    pphy2mlog = phy2mlog.gather(-1, pphy2phy)
    node_offset = torch.arange(0, num_logical, logical_per_node).view(1, -1, 1)
    pphy2mlog = (pphy2mlog.view(num_layers, num_nodes, -1) + node_offset).flatten(-2)
    pphy2log = mlog2log.gather(-1, pphy2mlog)
    pphyrank = phyrank.gather(-1, pphy2phy).view(num_layers, -1)
    logcnt = mlogcnt.view(num_layers, -1).gather(-1, log2mlog)
    return pphy2log, pphyrank, logcnt


def preserve_slots(new_p2l: torch.Tensor, old_p2l: torch.Tensor, num_ranks: int) -> torch.Tensor:
    """Reorder each rank's slots so experts that stay on a rank keep their old slot.

    Per layer and rank: each old slot whose expert is still among the rank's new experts keeps
    it (the first old slot matching takes the first copy); the freed slots, in ascending order,
    take the remaining new experts in ascending logical id. The multiset of experts per rank is
    unchanged, so loads are too; only weight moves are saved.
    """
    num_layers, num_replicas = new_p2l.shape
    per_rank = num_replicas // num_ranks
    result = new_p2l.clone()
    new_np, old_np = new_p2l.numpy(), old_p2l.numpy()
    out = result.numpy()
    for layer in range(num_layers):
        for rank in range(num_ranks):
            start = rank * per_rank
            remaining = sorted(new_np[layer, start : start + per_rank].tolist())
            slots = [-1] * per_rank
            for offset, expert in enumerate(old_np[layer, start : start + per_rank].tolist()):
                if expert in remaining:
                    slots[offset] = expert
                    remaining.remove(expert)
            fill = iter(remaining)
            out[layer, start : start + per_rank] = [e if e >= 0 else next(fill) for e in slots]
    return result


class DefaultEplbPolicy(AbstractEplbPolicy):
    """DeepSeek's hierarchical greedy policy, bit-exact with vLLM's default policy.

    Hierarchical when ``num_groups % num_nodes == 0`` (groups packed onto nodes, replicas
    inside nodes, replicas onto the node's GPUs); otherwise the global policy (the same with one
    group and one node). With ``old_global_expert_indices``, experts that stay on a rank keep
    their old slot (:func:`preserve_slots`).
    """

    @classmethod
    def rebalance_experts(
        cls,
        weight: ArrayLike,
        num_replicas: int,
        num_groups: int,
        num_nodes: int,
        num_ranks: int,
        old_global_expert_indices: ArrayLike | None = None,
    ) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
        problem = check_problem(weight, num_replicas, num_groups, num_nodes, num_ranks,
                                old_global_expert_indices)  # fmt: skip
        p2l = default_placement(problem.weight, problem.num_replicas, problem.num_groups,
                                problem.num_nodes, problem.num_ranks)  # fmt: skip
        if problem.old_physical_to_logical is not None:
            p2l = preserve_slots(p2l, problem.old_physical_to_logical, problem.num_ranks)
        l2p, count = logical_maps(p2l, problem.num_logical)
        return problem.output(p2l), problem.output(l2p), problem.output(count)


def default_placement(weight: torch.Tensor, num_replicas: int, num_groups: int, num_nodes: int,
                      num_ranks: int) -> torch.Tensor:  # fmt: skip
    """The physical-to-logical map of the default policy (validated float32 CPU inputs)."""
    if num_groups % num_nodes == 0:
        p2l, _, _ = rebalance_experts_hierarchical(weight, num_replicas, num_groups, num_nodes,
                                                   num_ranks)  # fmt: skip
    else:
        p2l, _, _ = rebalance_experts_hierarchical(weight, num_replicas, 1, 1, num_ranks)
    return p2l
