"""Violated preconditions give a ValueError naming the argument, for both policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moekit.eplb import DefaultEplbPolicy, IlpEplbPolicy

POLICIES = [DefaultEplbPolicy, IlpEplbPolicy]
GOOD = dict(num_replicas=12, num_groups=4, num_nodes=2, num_ranks=4)
CASES = [
    (dict(num_replicas=10), "num_replicas .*multiple of num_ranks"),
    (dict(num_ranks=3, num_replicas=12), "num_ranks .*multiple of num_nodes"),
    (dict(num_groups=3), "multiple of num_groups"),
    (dict(num_replicas=4, num_ranks=4), "num_replicas .*>= the number of logical"),
    (dict(num_ranks=0), "num_ranks must be >= 1"),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("change, message", CASES)
def test_layout_preconditions(policy, change, message):
    with pytest.raises(ValueError, match=message):
        policy.rebalance_experts(np.ones((2, 8)), **{**GOOD, **change})


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("weight, message", [
    (np.full((2, 8), -1.0), "weight must be >= 0"),
    (np.array([[np.nan] + [1.0] * 7]), "weight must be finite"),
    (np.array([[np.inf] + [1.0] * 7]), "weight must be finite"),
    (np.ones(8), "weight must be 2-D"),
    (np.ones((1, 2, 8)), "weight must be 2-D"),
    (np.ones((0, 8)), "at least one layer"),
])  # fmt: skip
def test_bad_weight(policy, weight, message):
    with pytest.raises(ValueError, match=message):
        policy.rebalance_experts(weight, **GOOD)


@pytest.mark.parametrize("policy", POLICIES)
def test_bad_types_and_old_map(policy):
    with pytest.raises(TypeError, match="weight"):
        policy.rebalance_experts([[1.0] * 8], **GOOD)
    with pytest.raises(TypeError, match="weight"):
        policy.rebalance_experts(torch.ones(2, 8, dtype=torch.bool), **GOOD)
    with pytest.raises(ValueError, match=r"old_global_expert_indices must have shape \[num_layers"):
        policy.rebalance_experts(np.ones((2, 8)), **GOOD,
                                 old_global_expert_indices=np.zeros((2, 8), dtype=np.int64))  # fmt: skip
    with pytest.raises(ValueError, match="old_global_expert_indices must hold logical ids"):
        policy.rebalance_experts(np.ones((2, 8)), **GOOD,
                                 old_global_expert_indices=np.full((2, 12), 8))  # fmt: skip
    with pytest.raises(TypeError, match="old_global_expert_indices"):
        policy.rebalance_experts(np.ones((2, 8)), **GOOD,
                                 old_global_expert_indices=np.zeros((2, 12)))  # fmt: skip
