"""Balance metrics against the NumPy reference and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import seeded, skewed_load

from moekit.eplb import (
    DefaultEplbPolicy,
    aggregate_balancedness,
    balancedness,
    imbalance,
    rank_load,
    replica_moves,
)
from moekit.reference import eplb as ref


def test_rank_load_by_hand():
    weight = np.array([[6.0, 2.0, 4.0]])
    p2l = np.array([[0, 1, 0, 2]])  # expert 0 has two replicas carrying 3 each
    np.testing.assert_allclose(rank_load(weight, p2l, 2), [[5.0, 7.0]])
    np.testing.assert_allclose(rank_load(torch.tensor(weight), torch.tensor(p2l), 4),
                               [[3.0, 2.0, 3.0, 4.0]])  # fmt: skip


def test_metrics_match_reference():
    with seeded("metrics") as rng:
        load = skewed_load(rng, 5, 32)
        p2l, _, _ = DefaultEplbPolicy.rebalance_experts(load, 40, 8, 2, 8)
        got = rank_load(load, p2l, 8)
        want = ref.rank_load(load, p2l, 8)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        np.testing.assert_allclose(balancedness(got), ref.balancedness(want), rtol=1e-12)
        np.testing.assert_allclose(imbalance(got), 1 / ref.balancedness(want), rtol=1e-12)
        assert aggregate_balancedness(got) == pytest.approx(ref.aggregate_balancedness(want))


def test_balancedness_edge_cases():
    load = np.array([[1.0, 1.0], [0.0, 0.0], [3.0, 1.0]])
    np.testing.assert_allclose(balancedness(load), [1.0, 1.0, 2 / 3])
    assert aggregate_balancedness(load) == pytest.approx((1 + 0 + 2) / (1 + 0 + 3))
    assert aggregate_balancedness(np.zeros((2, 3))) == 1.0


def test_replica_moves_multiset():
    old = np.array([[0, 1, 2, 3]])
    assert replica_moves(old, old, 2).tolist() == [0]
    assert replica_moves(old, np.array([[1, 0, 3, 2]]), 2).tolist() == [0]  # order only
    assert replica_moves(old, np.array([[0, 0, 2, 3]]), 2).tolist() == [1]
    assert replica_moves(old, np.array([[2, 3, 0, 1]]), 2).tolist() == [4]


@pytest.mark.parametrize("bad", [np.array([[-1.0, 2.0]]), np.array([[np.nan, 1.0]]),
                                 np.array([1.0, 2.0])])  # fmt: skip
def test_bad_load(bad):
    with pytest.raises(ValueError, match="load"):
        balancedness(bad)
