"""DefaultEplbPolicy against the spec's worked example and the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import seeded, skewed_load

from moekit.eplb import (
    DefaultEplbPolicy,
    balanced_packing,
    compute_logical_maps,
    replica_moves,
    replicate_experts,
)
from moekit.reference import eplb as ref

EXAMPLE = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                    [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])  # fmt: skip


def test_worked_example_counts_and_placement():
    p2l, l2p, count = DefaultEplbPolicy.rebalance_experts(EXAMPLE, 16, 4, 2, 8)
    assert count.tolist() == [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1],
                              [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]]  # fmt: skip
    # The placement published with DeepSeek's EPLB for this example.
    assert p2l.tolist() == [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                            [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]  # fmt: skip
    assert isinstance(p2l, np.ndarray) and p2l.dtype == np.int64
    assert l2p.shape == (2, 12, 5)
    assert l2p[0, 1].tolist() == [13, 15, -1, -1, -1]


def test_torch_in_torch_out_and_same_answer():
    a = DefaultEplbPolicy.rebalance_experts(EXAMPLE, 16, 4, 2, 8)
    b = DefaultEplbPolicy.rebalance_experts(torch.tensor(EXAMPLE), 16, 4, 2, 8)
    for x, y in zip(a, b):
        assert isinstance(y, torch.Tensor) and y.dtype == torch.int64
        np.testing.assert_array_equal(x, y.numpy())


LAYOUTS = [  # (experts, replicas, groups, nodes, ranks)
    (12, 16, 4, 2, 8), (16, 16, 4, 2, 4), (16, 24, 4, 4, 8), (32, 40, 8, 2, 8),
    (32, 40, 1, 1, 4), (24, 32, 6, 4, 8), (64, 72, 8, 4, 8), (256, 288, 8, 4, 32),
]  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("kind", ["uniform", "zipf"])
@pytest.mark.parametrize("with_old", [False, True])
def test_matches_reference(layout, kind, with_old):
    experts, replicas, groups, nodes, ranks = layout
    with seeded("default-vs-ref", layout, kind, with_old) as rng:
        if kind == "zipf":
            load = skewed_load(rng, 3, experts)
        else:
            load = rng.integers(0, 100, (3, experts)).astype(np.float32)
        old = None
        if with_old:
            old = np.stack([rng.permutation(np.arange(replicas) % experts) for _ in range(3)])
        got = DefaultEplbPolicy.rebalance_experts(load, replicas, groups, nodes, ranks, old)
        want = ref.rebalance_experts(load, replicas, groups, nodes, ranks, old)
        for name, g, w in zip(("p2l", "l2p", "count"), got, want):
            np.testing.assert_array_equal(g, w, err_msg=name)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_invariants(layout):
    experts, replicas, groups, nodes, ranks = layout
    with seeded("invariants", layout) as rng:
        load = skewed_load(rng, 4, experts)
        p2l, l2p, count = DefaultEplbPolicy.rebalance_experts(load, replicas, groups, nodes, ranks)
        assert (count >= 1).all() and (count.sum(axis=1) == replicas).all()
        for layer in range(4):
            assert np.array_equal(np.bincount(p2l[layer], minlength=experts), count[layer])
            for e in range(experts):
                slots = l2p[layer, e][l2p[layer, e] >= 0]
                assert len(slots) == count[layer, e]
                assert (np.diff(slots) > 0).all() and (p2l[layer, slots] == e).all()
            if groups % nodes == 0:  # each group's replicas on one node
                per_node = replicas // nodes
                group_size = experts // groups
                node_of_slot = np.arange(replicas) // per_node
                for g in range(groups):
                    in_group = (p2l[layer] // group_size) == g
                    assert len(set(node_of_slot[in_group].tolist())) == 1


def test_preserved_slots_reduce_moves_and_keep_loads():
    with seeded("preserve") as rng:
        load = skewed_load(rng, 3, 64)
        old, _, _ = DefaultEplbPolicy.rebalance_experts(load, 72, 8, 2, 8)
        new_load = load + rng.integers(0, 50, load.shape).astype(np.float32)
        fresh, _, _ = DefaultEplbPolicy.rebalance_experts(new_load, 72, 8, 2, 8)
        kept, _, _ = DefaultEplbPolicy.rebalance_experts(new_load, 72, 8, 2, 8, old)
        per_rank = 9
        for layer in range(3):
            for r in range(8):
                span = slice(r * per_rank, (r + 1) * per_rank)
                assert sorted(kept[layer, span]) == sorted(fresh[layer, span])
                # Every expert staying on the rank stays in as many old slots as it can.
                stays = sum(min(list(old[layer, span]).count(e), list(kept[layer, span]).count(e))
                            for e in set(kept[layer, span].tolist()))  # fmt: skip
                assert (old[layer, span] == kept[layer, span]).sum() == stays
        assert (replica_moves(old, kept, 8) == replica_moves(old, fresh, 8)).all()
        changed_kept = (old != kept).sum()
        changed_fresh = (old != fresh).sum()
        assert changed_kept <= changed_fresh


def test_balanced_packing_ties_and_capacity():
    weight = torch.tensor([[5.0, 5.0, 5.0, 5.0, 1.0, 1.0]])
    pack, rank = balanced_packing(weight, 2)
    # Ties visit the lower index first; the first least-loaded pack wins.
    assert pack.tolist() == [[0, 1, 0, 1, 0, 1]]
    assert rank.tolist() == [[0, 0, 1, 1, 2, 2]]
    with seeded("packing") as rng:
        weight = torch.from_numpy(rng.random((5, 24)).astype(np.float32))
        pack, rank = balanced_packing(weight, 4)
        for row in range(5):
            want_pack, want_rank = ref.balanced_packing_row(weight[row].numpy(), 4)
            assert pack[row].tolist() == want_pack.tolist()
            assert rank[row].tolist() == want_rank.tolist()
            assert np.bincount(pack[row].numpy()).tolist() == [6] * 4


def test_replicate_experts_first_maximum():
    phy2log, rank, count = replicate_experts(torch.tensor([[4.0, 4.0, 1.0]]), 5)
    assert phy2log.tolist() == [[0, 1, 2, 0, 1]]
    assert rank.tolist() == [[0, 0, 0, 1, 1]]
    assert count.tolist() == [[2, 2, 1]]


def test_compute_logical_maps_checks_and_values():
    p2l = np.array([[2, 0, 1, 0]])
    l2p, count = compute_logical_maps(p2l, 3)
    assert l2p.tolist() == [[[1, 3], [2, -1], [0, -1]]]
    assert count.tolist() == [[2, 1, 1]]
    with pytest.raises(ValueError, match="no replica"):
        compute_logical_maps(np.array([[0, 0, 1, 1]]), 3)
    with pytest.raises(ValueError, match="ids in"):
        compute_logical_maps(np.array([[0, 3, 1, 2]]), 3)
