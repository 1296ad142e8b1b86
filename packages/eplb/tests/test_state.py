"""EplbState: initial maps, the window, the schedule and moves that rebuild the new layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import seeded

from moekit.eplb import EplbState, IlpEplbPolicy, rank_load


def test_initial_maps():
    state = EplbState(2, 4, 6, num_ranks=2)
    assert state.physical_to_logical_map.tolist() == [[0, 1, 2, 3, 0, 1]] * 2
    assert state.logical_replica_count.tolist() == [[2, 2, 1, 1]] * 2
    assert state.logical_to_physical_map[0].tolist() == [[0, 4, -1], [1, 5, -1], [2, -1, -1],
                                                         [3, -1, -1]]  # fmt: skip


def _routed(rng, tokens, experts, top_k):
    p = np.arange(1, experts + 1, dtype=np.float64) ** -1.5
    p /= p.sum()
    ids = np.stack([rng.choice(experts, top_k, replace=False, p=p) for _ in range(tokens)])
    return torch.from_numpy(ids).to(torch.int32)


@pytest.mark.parametrize("policy", ["default", "ilp"])
def test_schedule_window_and_moves(policy):
    options = {"time_limit": 0.2} if policy == "ilp" else None
    chosen = IlpEplbPolicy if policy == "ilp" else None
    kwargs = {"policy": chosen} if chosen else {}
    with seeded("state", policy) as rng:
        state = EplbState(2, 16, 24, num_groups=4, num_nodes=2, num_ranks=4, window_size=2,
                          step_interval=3, policy_options=options, **kwargs)  # fmt: skip
        weights = rng.standard_normal((2, 24))  # a stand-in for each slot's expert weights
        for slot in range(24):
            weights[:, slot] = state.physical_to_logical_map[:, slot].numpy() * 10.0
        maps_before = state.logical_to_physical_map  # updated in place
        recorded = []
        for step in range(3):
            ids = [_routed(rng, 50, 16, 2) for _ in range(2)]
            for layer in range(2):
                physical = state.record(layer, ids[layer], backend="torch")
                p2l = state.physical_to_logical_map[layer]
                assert (p2l[physical.long()] == ids[layer]).all()
            recorded.append(state.expert_load_pass.clone())
            assert state.expert_load_pass.sum() == 2 * 50 * 2
            old_p2l = state.physical_to_logical_map.clone()
            result = state.step()
            assert (result is None) == (step < 2)
        # The window holds the last two passes only.
        window = recorded[1] + recorded[2]
        assert torch.equal(state.expert_load_window.sum(0), window)
        assert state.logical_to_physical_map is maps_before
        assert torch.equal(state.physical_to_logical_map, result.physical_to_logical_map)
        # Applying the moves to the old layout gives the new one.
        moved = weights.copy()
        for move in result.moves:
            assert old_p2l[move.layer, move.source_slot] == move.expert
            moved[move.layer, move.target_slot] = weights[move.layer, move.source_slot]
        np.testing.assert_array_equal(moved, result.physical_to_logical_map.numpy() * 10.0)
        logical = torch.zeros(2, 16, dtype=torch.int64).scatter_add_(1, old_p2l, window)
        before = rank_load(logical, old_p2l, 4).max(axis=1)
        after = rank_load(logical, result.physical_to_logical_map, 4).max(axis=1)
        assert (after <= before + 1e-9).all()
        assert result.balancedness_after >= result.balancedness_before - 1e-12


def test_bad_construction():
    with pytest.raises(ValueError, match="num_replicas"):
        EplbState(1, 8, 6)
    with pytest.raises(ValueError, match="num_ranks"):
        EplbState(1, 8, 10, num_ranks=4)
    with pytest.raises(ValueError, match="window_size"):
        EplbState(1, 8, 8, window_size=0)
    with pytest.raises(TypeError, match="policy"):
        EplbState(1, 8, 8, policy=object)
    state = EplbState(2, 8, 8)
    with pytest.raises(ValueError, match="layer"):
        state.record(2, torch.zeros(1, 1, dtype=torch.int32))


def test_to_moves_every_tensor_and_keeps_them_when_already_there():
    state = EplbState(2, 4, 6, num_ranks=2)
    same = state.to("cpu")
    assert same is state and state.physical_to_logical_map.device.type == "cpu"
    before = state.logical_to_physical_map
    state.to("cpu")
    assert state.logical_to_physical_map is before  # in place: graphs holding the maps stay valid
    state.to("meta")
    for name in ("physical_to_logical_map", "logical_to_physical_map", "logical_replica_count",
                 "expert_load_pass", "expert_load_window"):  # fmt: skip
        assert getattr(state, name).device.type == "meta", name
    assert state.device.type == "meta"


def test_plan_then_commit_equals_rearrange_and_bad_maps_are_refused():
    seed = 5
    load = torch.from_numpy(np.random.default_rng(seed).zipf(1.5, (2, 8)).astype(np.int64))
    states = [EplbState(2, 8, 12, num_ranks=4, window_size=1) for _ in range(2)]
    for state in states:
        state.expert_load_window[0] = torch.zeros(2, 12, dtype=torch.int64)
        state.expert_load_window[0, :, :8] = load
    direct = states[0].rearrange()
    planned = states[1].commit(states[1].plan(), states[1].logical_load())
    assert torch.equal(direct.physical_to_logical_map, planned.physical_to_logical_map), seed
    assert direct.moves == planned.moves and direct.moves, seed
    assert torch.equal(states[0].logical_to_physical_map, states[1].logical_to_physical_map)
    with pytest.raises(ValueError, match="every logical expert"):
        states[1].commit(torch.zeros(2, 12, dtype=torch.int64), load)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        states[1].commit(torch.full((2, 12), 9), load)
    with pytest.raises(ValueError, match=r"\[2, 12\]"):
        states[1].commit(torch.zeros(2, 11, dtype=torch.int64), load)
