"""The simulator's strategies: distinct ids, seeds that repeat, the registry, replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moekit.routing import (
    DistributionBasedRouting,
    HotExpertsRouting,
    ReplayRouting,
    RoutingSimulator,
    RoutingStrategy,
    ZipfRouting,
)

LOGITS = torch.zeros(300, 32)


def distinct_rows(ids: torch.Tensor) -> bool:
    return all(len(set(row)) == len(row) for row in ids.tolist())


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: DistributionBasedRouting("UNIFORM", seed=seed),
        lambda seed: DistributionBasedRouting("normal", mean=0.5, std=0.3, seed=seed),
        lambda seed: ZipfRouting(1.3, seed=seed),
        lambda seed: HotExpertsRouting(num_hot=3, hot_share=0.9, seed=seed),
    ],
)
def test_seeded_strategies_give_distinct_repeatable_ids(make):
    first_w, first = make(4).route_tokens(LOGITS, LOGITS, 6, torch.int64)
    again_w, again = make(4).route_tokens(LOGITS, LOGITS, 6, torch.int64)
    assert torch.equal(first, again) and torch.equal(first_w, again_w)
    assert not torch.equal(first, make(5).route_tokens(LOGITS, LOGITS, 6, torch.int64)[1])
    assert first.dtype == torch.int64 and first_w.dtype == torch.float32
    assert distinct_rows(first) and int(first.min()) >= 0 and int(first.max()) < 32


def test_normal_with_a_narrow_spread_still_gives_distinct_ids():
    narrow = DistributionBasedRouting("normal", std=1e-4, seed=0)
    weights, ids = narrow.route_tokens(LOGITS, LOGITS, 8)
    assert distinct_rows(ids)
    assert set(ids.reshape(-1).tolist()) <= set(range(11, 21))  # packed around E/2 = 16
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(300))
    assert narrow.get_distribution_info() == {"distribution": "normal", "mean": 0.0, "std": 1e-4}


def test_hot_experts_with_all_traffic_on_fewer_experts_than_k():
    weights, ids = HotExpertsRouting([1, 2], hot_share=1.0, seed=0).route_tokens(LOGITS, LOGITS, 4)
    assert distinct_rows(ids) and torch.all((ids == 1).any(dim=1) & (ids == 2).any(dim=1))
    torch.testing.assert_close(weights, torch.full((300, 4), 0.25))


def test_replay_plays_back_in_order_and_wraps(tmp_path):
    trace = np.array([[0, 1], [2, 3], [4, 5]], dtype=np.int64)
    path = tmp_path / "trace.npy"
    np.save(path, trace)
    replay = ReplayRouting(str(path))
    _, first = replay.route_tokens(LOGITS[:2], LOGITS[:2], 2)
    _, second = replay.route_tokens(LOGITS[:2], LOGITS[:2], 2)
    assert first.tolist() == [[0, 1], [2, 3]] and second.tolist() == [[4, 5], [0, 1]]
    replay.reset()
    assert replay.route_tokens(LOGITS[:1], LOGITS[:1], 2)[1].tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="k=2"):
        replay.route_tokens(LOGITS, LOGITS, 3)
    with pytest.raises(ValueError, match="repeats"):
        ReplayRouting(np.array([[1, 1]]))
    with pytest.raises(ValueError, match="6 experts"):
        ReplayRouting(trace + 1).route_tokens(torch.zeros(1, 6), torch.zeros(1, 6), 2)


def test_registry_registers_lists_and_simulates():
    class FirstK(RoutingStrategy):
        def _route(self, num_tokens, num_experts, top_k):
            return torch.ones(num_tokens, top_k), torch.arange(top_k).expand(num_tokens, top_k)

    RoutingSimulator.register_strategy("first_k_test", FirstK())
    try:
        assert {"uniform_random", "normal_routing", "zipf", "hot_experts", "first_k_test"} <= set(
            RoutingSimulator.get_available_strategies()
        )
        _, ids = RoutingSimulator.simulate_routing(LOGITS[:2], LOGITS[:2], "first_k_test", 3)
        assert ids.tolist() == [[0, 1, 2]] * 2 and ids.dtype == torch.int32
    finally:
        RoutingSimulator._strategies.pop("first_k_test")
    with pytest.raises(TypeError, match="RoutingStrategy"):
        RoutingSimulator.register_strategy("bad", object())  # type: ignore[arg-type]
