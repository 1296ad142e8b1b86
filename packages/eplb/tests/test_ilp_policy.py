"""IlpEplbPolicy: never worse than the default, never below its bound, valid placements."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from helpers import seeded, skewed_load

from moekit.eplb import DefaultEplbPolicy, IlpEplbPolicy, rank_load, replica_moves


def _check_valid(p2l, l2p, count, experts, replicas, groups=None, nodes=None):
    assert (count >= 1).all() and (count.sum(axis=1) == replicas).all()
    for layer in range(p2l.shape[0]):
        assert np.array_equal(np.bincount(p2l[layer], minlength=experts), count[layer])
        for e in range(experts):
            slots = l2p[layer, e][l2p[layer, e] >= 0]
            assert (p2l[layer, slots] == e).all() and len(slots) == count[layer, e]
        if groups is not None:
            per_node, group_size = replicas // nodes, experts // groups
            for g in range(groups):
                nodes_used = set(
                    (np.flatnonzero(p2l[layer] // group_size == g) // per_node).tolist()
                )
                assert len(nodes_used) == 1, f"group {g} spans nodes {nodes_used}"


LAYOUTS = [(16, 20, 4, 2, 4), (32, 40, 8, 2, 8), (64, 80, 8, 4, 16), (24, 32, 6, 4, 8)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("hierarchical", [True, False])
def test_never_worse_than_default_and_at_least_the_bound(layout, hierarchical):
    experts, replicas, groups, nodes, ranks = layout
    with seeded("ilp", layout, hierarchical) as rng:
        load = skewed_load(rng, 3, experts, exponent=1.5, tokens=4096)
        plan = IlpEplbPolicy.plan(load, replicas, groups, nodes, ranks, time_limit=0.3,
                                  hierarchical=hierarchical)  # fmt: skip
        p2l, l2p, count = (
            plan.physical_to_logical_map,
            plan.logical_to_physical_map,
            plan.expert_count,
        )
        hier = hierarchical and groups % nodes == 0
        _check_valid(p2l, l2p, count, experts, replicas, groups if hier else None, nodes)
        default_p2l, _, _ = DefaultEplbPolicy.rebalance_experts(
            load, replicas, groups, nodes, ranks
        )
        got = rank_load(load, p2l, ranks).max(axis=1)
        default = rank_load(load, default_p2l, ranks).max(axis=1)
        assert (got <= default * (1 + 1e-9)).all(), (got, default)
        for layer, report in enumerate(plan.reports):
            assert report.objective == pytest.approx(got[layer])
            assert report.default_objective == pytest.approx(default[layer])
            assert report.lower_bound <= got[layer] * (1 + 1e-9)
            assert report.lower_bound >= load[layer].sum() / ranks * (1 - 1e-9)
            assert 0 <= report.gap < 1 and report.source in ("ilp", "default")
            assert report.status in ("optimal", "time_limit")
            assert report.seconds < 2.0


def test_flat_beats_default_on_skewed_load():
    with seeded("flat-beats") as rng:
        load = skewed_load(rng, 2, 64, exponent=1.2)
        plan = IlpEplbPolicy.plan(load, 80, 8, 2, 16, time_limit=0.5, hierarchical=False)
        for report in plan.reports:
            assert report.objective < report.default_objective * 0.95, report


def test_deepseek_scale_layer_within_the_time_limit():
    """One layer of DeepSeek-V3 scale (256 experts, 288 replicas, 32 ranks, 4 nodes)."""
    with seeded("deepseek-scale") as rng:
        load = skewed_load(rng, 1, 256, exponent=1.2, tokens=32768)
        start = time.perf_counter()
        plan = IlpEplbPolicy.plan(load, 288, 8, 4, 32, time_limit=1.0, hierarchical=False)
        elapsed = time.perf_counter() - start
        assert elapsed < 3.0  # 1 s of solving plus checks and the default policy
        report = plan.reports[0]
        assert report.objective < report.default_objective


def test_migration_weight_trades_balance_for_fewer_moves():
    with seeded("migration") as rng:
        load = skewed_load(rng, 2, 32, exponent=1.3)
        old, _, _ = DefaultEplbPolicy.rebalance_experts(load, 40, 8, 2, 8)
        shifted = np.roll(load, 5, axis=1)
        free = IlpEplbPolicy.plan(shifted, 40, 8, 2, 8, old, time_limit=0.3)
        costly = IlpEplbPolicy.plan(shifted, 40, 8, 2, 8, old, time_limit=0.3,
                                    migration_weight=float(load.sum()))  # fmt: skip
        free_moves = replica_moves(old, free.physical_to_logical_map, 8)
        costly_moves = replica_moves(old, costly.physical_to_logical_map, 8)
        assert costly_moves.sum() <= free_moves.sum()
        for report, moves in zip(costly.reports, costly_moves):
            assert report.moves == moves


def test_torch_input_gives_torch_output():
    load = torch.tensor([[10.0, 1, 1, 1, 5, 1, 1, 1]])
    p2l, l2p, count = IlpEplbPolicy.rebalance_experts(load, 12, 2, 2, 4, time_limit=0.2)
    assert all(isinstance(t, torch.Tensor) for t in (p2l, l2p, count))
    assert count.sum().item() == 12


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1"])
def test_bad_time_limit(bad):
    with pytest.raises((ValueError, TypeError), match="time_limit"):
        IlpEplbPolicy.plan(np.ones((1, 4)), 4, 1, 1, 2, time_limit=bad)
