"""EPLB (spec: moekit.eplb): the upstream worked example, placement invariants, the default policy
against the NumPy reference, the optimising policy against the default and its bound, the routing
hook, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from moekit.conformance import adapters as caps
from moekit.conformance import eplb_adapters as ecaps
from moekit.conformance import generators as gen
from moekit.conformance.adapters import ReferenceAdapter
from moekit.conformance.checks import ConformanceError, call_repr

REFERENCE = ReferenceAdapter()
EXAMPLE = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                    [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]], dtype=np.float32)  # fmt: skip
# (experts, replicas, groups, nodes, ranks): hierarchical, global fallback, DeepSeek-like.
LAYOUTS = [(12, 16, 4, 2, 8), (16, 24, 4, 4, 8), (32, 40, 8, 2, 8), (24, 32, 6, 4, 8),
           (16, 20, 1, 1, 4), (64, 72, 8, 4, 8), (256, 288, 8, 4, 32)]  # fmt: skip


def skewed(rng, layers, experts, exponent):
    p = np.arange(1, experts + 1, dtype=np.float64) ** -exponent
    p /= p.sum()
    return np.stack([rng.multinomial(64 * experts, rng.permutation(p)) for _ in range(layers)]
                    ).astype(np.float32)  # fmt: skip


def load_for(seed, layers, experts, kind):
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, 200, (layers, experts)).astype(np.float32)
    return skewed(rng, layers, experts, 1.5 if kind == "zipf" else 1.1)


def check_placement(p2l, l2p, count, weight, replicas, groups, nodes, ranks, reproduce):
    layers, experts = weight.shape
    if p2l.shape != (layers, replicas) or count.shape != (layers, experts):
        raise ConformanceError(f"shapes {p2l.shape}, {count.shape}", reproduce)
    if l2p.shape != (layers, experts, replicas - experts + 1):
        raise ConformanceError(f"logical_to_physical_map shape {l2p.shape}", reproduce)
    for layer in range(layers):
        if not np.array_equal(np.bincount(p2l[layer], minlength=experts), count[layer]):
            raise ConformanceError(f"layer {layer}: counts disagree with the map", reproduce)
        if (count[layer] < 1).any():
            raise ConformanceError(f"layer {layer}: an expert without a replica", reproduce)
        for e in range(experts):
            slots = l2p[layer, e]
            placed = slots[: count[layer, e]]
            if (slots[count[layer, e] :] != -1).any() or (np.diff(placed) <= 0).any():
                raise ConformanceError(f"layer {layer} expert {e}: l2p row {slots}", reproduce)
            if (p2l[layer, placed] != e).any():
                raise ConformanceError(f"layer {layer} expert {e}: maps disagree", reproduce)
        if groups % nodes == 0:
            per_node, group_size = replicas // nodes, experts // groups
            for g in range(groups):
                used = set((np.flatnonzero(p2l[layer] // group_size == g) // per_node).tolist())
                if len(used) != 1:
                    raise ConformanceError(f"layer {layer}: group {g} on nodes {used}", reproduce)


@pytest.mark.requires(ecaps.EPLB)
def test_upstream_worked_example(adapter):
    args = dict(weight=EXAMPLE, num_replicas=16, num_groups=4, num_nodes=2, num_ranks=8)
    p2l, l2p, count = adapter.rebalance_experts(**args)
    reproduce = call_repr("rebalance_experts", args)
    want_count = [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1], [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]]
    if np.asarray(count).tolist() != want_count:
        raise ConformanceError(f"replica counts {np.asarray(count).tolist()}", reproduce)
    want_p2l = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]  # fmt: skip
    if np.asarray(p2l).tolist() != want_p2l:
        raise ConformanceError(f"placement {np.asarray(p2l).tolist()}", reproduce)
    check_placement(np.asarray(p2l), np.asarray(l2p), np.asarray(count), EXAMPLE, 16, 4, 2, 8,
                    reproduce)  # fmt: skip


@pytest.mark.requires(ecaps.EPLB)
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("kind", ["uniform", "zipf", "mild"])
@pytest.mark.parametrize("with_old", [False, True])
def test_default_policy_matches_reference(adapter, layout, kind, with_old):
    experts, replicas, groups, nodes, ranks = layout
    seed = gen.stable_seed("eplb-default", layout, kind, with_old)
    weight = load_for(seed, 3, experts, kind)
    old = None
    if with_old:
        rng = np.random.default_rng(seed + 1)
        old = np.stack([rng.permutation(np.arange(replicas) % experts) for _ in range(3)])
    args = dict(weight=weight, num_replicas=replicas, num_groups=groups, num_nodes=nodes,
                num_ranks=ranks, old_global_expert_indices=old)  # fmt: skip
    reproduce = f"seed {seed}: " + call_repr("rebalance_experts", args)
    got = [np.asarray(a) for a in adapter.rebalance_experts(**args)]
    check_placement(*got, weight, replicas, groups, nodes, ranks, reproduce)
    want = REFERENCE.rebalance_experts(**args)
    for name, g, w in zip(("physical_to_logical_map", "logical_to_physical_map", "expert_count"),
                          got, want):  # fmt: skip
        if not np.array_equal(g, w):
            raise ConformanceError(f"{name} differs from the reference", reproduce)


def _max_rank_load(weight, p2l, ranks):
    from moekit.reference import eplb

    return eplb.rank_load(weight, p2l, ranks).max(axis=1)


@pytest.mark.requires(ecaps.EPLB_ILP)
@pytest.mark.parametrize("layout", LAYOUTS[:5], ids=str)
@pytest.mark.parametrize("hierarchical", [True, False])
def test_ilp_never_worse_than_default_and_not_below_its_bound(adapter, layout, hierarchical):
    experts, replicas, groups, nodes, ranks = layout
    seed = gen.stable_seed("eplb-ilp", layout, hierarchical)
    weight = load_for(seed, 2, experts, "zipf")
    args = dict(weight=weight, num_replicas=replicas, num_groups=groups, num_nodes=nodes,
                num_ranks=ranks, time_limit=0.3, hierarchical=hierarchical)  # fmt: skip
    reproduce = f"seed {seed}: " + call_repr("ilp_rebalance_experts", args)
    p2l, l2p, count, bound = (np.asarray(a) for a in adapter.ilp_rebalance_experts(**args))
    check_placement(p2l, l2p, count, weight, replicas,
                    groups if hierarchical else 1, nodes if hierarchical else 1, ranks, reproduce)  # fmt: skip
    default_p2l, _, _ = REFERENCE.rebalance_experts(weight, replicas, groups, nodes, ranks)
    got = _max_rank_load(weight, p2l, ranks)
    default = _max_rank_load(weight, default_p2l, ranks)
    if (got > default * (1 + 1e-9)).any():
        raise ConformanceError(f"max rank load {got} above the default's {default}", reproduce)
    if (bound > got * (1 + 1e-9)).any():
        raise ConformanceError(f"lower bound {bound} above the objective {got}", reproduce)
    trivial = weight.astype(np.float64).sum(axis=1) / ranks
    if (bound < trivial * (1 - 1e-9)).any():
        raise ConformanceError(f"lower bound {bound} below sum(weight)/ranks {trivial}", reproduce)


@pytest.mark.requires(ecaps.EPLB_HOOK)
@pytest.mark.parametrize("shape", [(1, 1), (5, 2), (64, 8), (257, 4)])
@pytest.mark.parametrize("id_dtype", ["int32", "int64"])
@pytest.mark.parametrize("valid", ["all", "some", "none"])
def test_routing_hook_matches_reference(adapter, shape, id_dtype, valid):
    if id_dtype == "int64" and caps.INT64_IDS not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability int64_ids")
    seed = gen.stable_seed("eplb-hook", shape, id_dtype, valid)
    rng = np.random.default_rng(seed)
    weight = rng.integers(0, 100, (1, 16)).astype(np.float32)
    _, l2p, count = REFERENCE.rebalance_experts(weight, 24, 4, 2, 4)
    ids = rng.integers(-1, 18, shape).astype(id_dtype)  # -1, 16 and 17 are invalid
    num_valid = {"all": None, "some": shape[0] // 2, "none": 0}[valid]
    args = dict(topk_ids=ids, logical_to_physical_map=l2p[0], logical_replica_count=count[0],
                num_replicas=24, num_valid_tokens=num_valid)  # fmt: skip
    reproduce = f"seed {seed}: " + call_repr("map_to_physical_and_record", args)
    physical, load = adapter.map_to_physical_and_record(**args)
    want_physical, want_load = REFERENCE.map_to_physical_and_record(**args)
    if np.asarray(physical).dtype != ids.dtype:
        raise ConformanceError(f"physical ids dtype {np.asarray(physical).dtype}", reproduce)
    if not np.array_equal(physical, want_physical):
        raise ConformanceError("physical ids differ from the reference", reproduce)
    if not np.array_equal(load, want_load):
        raise ConformanceError(f"recorded load {load}, expected {want_load}", reproduce)


@pytest.mark.requires(ecaps.EPLB, caps.VALIDATES_INPUT)
@pytest.mark.parametrize("change, argument", [
    (dict(num_replicas=10), "num_replicas"), (dict(num_ranks=3), "num_ranks"),
    (dict(num_groups=3), "num_groups"), (dict(num_replicas=4, num_ranks=4), "num_replicas"),
    (dict(weight=-np.ones((2, 8), np.float32)), "weight"),
    (dict(weight=np.full((2, 8), np.nan, np.float32)), "weight"),
    (dict(weight=np.ones(8, np.float32)), "weight"),
    (dict(old_global_expert_indices=np.zeros((2, 8), np.int64)), "old_global_expert_indices"),
])  # fmt: skip
def test_bad_input_names_the_argument(adapter, change, argument):
    args = dict(weight=np.ones((2, 8), np.float32), num_replicas=12, num_groups=4, num_nodes=2,
                num_ranks=4, old_global_expert_indices=None)  # fmt: skip
    args.update(change)
    with pytest.raises(ValueError, match=argument):
        adapter.rebalance_experts(**args)
