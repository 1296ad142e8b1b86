"""The prepare and reduce steps against their NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moekit.experts import (
    BatchedPrepareAndFinalize,
    FusedMoEQuantConfig,
    TopKWeightAndReduceContiguous,
    TopKWeightAndReduceNaiveBatched,
)
from moekit.reference import experts as ref

MAP = np.array([-1, 0, 1, -1, 2, 3], dtype=np.int32)


@pytest.mark.parametrize("expert_map", [None, MAP], ids=["no-map", "map"])
@pytest.mark.parametrize("seed", range(3))
def test_batched_prepare_and_reduce_match_reference(seed, expert_map):
    rng = np.random.default_rng(seed)
    num_global = 6
    num_local = 4 if expert_map is not None else 6
    ids = np.array([rng.permutation(num_global)[:3] for _ in range(9)], dtype=np.int32)
    ids[0, 1] = -1
    x = rng.standard_normal((9, 16)).astype(np.float32)
    weights = rng.random((9, 3)).astype(np.float32)
    emap = None if expert_map is None else torch.from_numpy(expert_map)
    prepare = BatchedPrepareAndFinalize(12, num_local)
    batched, _, meta, _, _ = prepare.prepare(torch.from_numpy(x), torch.from_numpy(weights),
                                             torch.from_numpy(ids), num_global, emap, False,
                                             FusedMoEQuantConfig())  # fmt: skip
    want_batched, want_counts = ref.batched_prepare(x, ids, num_local, 12, expert_map)
    np.testing.assert_array_equal(meta.expert_num_tokens.numpy(), want_counts, f"seed={seed}")
    np.testing.assert_allclose(batched.numpy(), want_batched, err_msg=f"seed={seed}")

    expert_out = rng.standard_normal((num_local, 12, 16)).astype(np.float32)
    got = TopKWeightAndReduceNaiveBatched(0, emap, num_local).apply(
        None, torch.from_numpy(expert_out), torch.from_numpy(weights), torch.from_numpy(ids), False
    )
    want = ref.weight_and_reduce_batched(expert_out, weights, ids, expert_map)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5, err_msg=f"seed={seed}")


@pytest.mark.parametrize("on_input", [False, True])
def test_contiguous_reduce_matches_reference(on_input):
    rng = np.random.default_rng(4)
    per_slot = rng.standard_normal((5, 3, 8)).astype(np.float32)
    weights = rng.random((5, 3)).astype(np.float32)
    got = TopKWeightAndReduceContiguous().apply(
        None, torch.from_numpy(per_slot), torch.from_numpy(weights), torch.zeros(5, 3), on_input
    )
    want = ref.weight_and_reduce_contiguous(per_slot, weights, on_input)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
