"""map_to_physical_and_record: torch path and Triton kernel (interpreter) against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import seeded

from moekit.eplb import DefaultEplbPolicy, map_to_physical_and_record
from moekit.reference import eplb as ref

BACKENDS = ["torch", "triton"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (7, 2), (64, 8), (300, 4)])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("record", [False, True])
def test_matches_reference(backend, shape, id_dtype, record):
    num_tokens, top_k = shape
    with seeded("hook", backend, shape, id_dtype, record) as rng:
        load = rng.integers(0, 100, (1, 16)).astype(np.float32)
        _, l2p, count = DefaultEplbPolicy.rebalance_experts(load, 24, 4, 2, 4)
        ids = rng.integers(-1, 17, shape)  # -1 and 16 are invalid
        valid_tokens = int(rng.integers(0, num_tokens + 1))
        want_ids, want_load = ref.map_to_physical_and_record(ids, l2p[0], count[0], 24,
                                                             valid_tokens)  # fmt: skip
        expert_load = torch.full((24,), 5, dtype=torch.int64) if record else None
        got = map_to_physical_and_record(
            torch.tensor(ids, dtype=id_dtype), torch.from_numpy(l2p[0]),
            torch.from_numpy(count[0]), expert_load, valid_tokens, backend=backend,
        )  # fmt: skip
        assert got.dtype == id_dtype
        np.testing.assert_array_equal(got.numpy(), want_ids)
        if record:
            np.testing.assert_array_equal(expert_load.numpy(), want_load + 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_replicas_spread_by_token_hash(backend):
    l2p = torch.tensor([[0, 1, 2, 3]])
    count = torch.tensor([4])
    ids = torch.zeros(400, 1, dtype=torch.int64)
    load = torch.zeros(4, dtype=torch.int64)
    got = map_to_physical_and_record(ids, l2p, count, load, backend=backend)
    tokens = np.arange(400)
    np.testing.assert_array_equal(got[:, 0].numpy(), ((tokens * 2654435769) & 0xFFFFFFFF) % 4)
    assert load.sum() == 400 and (load > 60).all()


def test_empty_input():
    out = map_to_physical_and_record(torch.empty(0, 2, dtype=torch.int32), torch.zeros(3, 1,
                                     dtype=torch.int64), torch.ones(3, dtype=torch.int64))  # fmt: skip
    assert out.shape == (0, 2)


def test_bad_input():
    ids = torch.zeros(4, 2, dtype=torch.int32)
    l2p = torch.zeros(3, 2, dtype=torch.int64)
    count = torch.ones(3, dtype=torch.int64)
    with pytest.raises(TypeError, match="topk_ids"):
        map_to_physical_and_record(ids.float(), l2p, count)
    with pytest.raises(ValueError, match="topk_ids"):
        map_to_physical_and_record(ids[0], l2p, count)
    with pytest.raises(ValueError, match="logical_replica_count"):
        map_to_physical_and_record(ids, l2p, count[:2])
    with pytest.raises(ValueError, match="logical_replica_count holds 3"):
        map_to_physical_and_record(ids, l2p, torch.tensor([3, 1, 1]))
    with pytest.raises(ValueError, match="num_valid_tokens"):
        map_to_physical_and_record(ids, l2p, count, num_valid_tokens=-1)
    with pytest.raises(TypeError, match="expert_load"):
        map_to_physical_and_record(ids, l2p, count, torch.zeros(2))
    with pytest.raises(ValueError, match="backend"):
        map_to_physical_and_record(ids, l2p, count, backend="cuda")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_replicas", [1, 31, 3000])
def test_recording_with_few_and_many_replicas(backend, num_replicas):
    with seeded("hook-bins", backend, num_replicas) as rng:
        l2p = np.arange(num_replicas).reshape(-1, 1)
        count = np.ones(num_replicas, dtype=np.int64)
        ids = rng.integers(-1, num_replicas, (700, 3))
        want_ids, want_load = ref.map_to_physical_and_record(ids, l2p, count, num_replicas, 650)
        load = torch.full((num_replicas,), 2, dtype=torch.int32)
        got = map_to_physical_and_record(torch.from_numpy(ids), torch.from_numpy(l2p),
                                         torch.from_numpy(count), load, 650, backend=backend)  # fmt: skip
        np.testing.assert_array_equal(got.numpy(), want_ids)
        np.testing.assert_array_equal(load.numpy(), want_load + 2)
