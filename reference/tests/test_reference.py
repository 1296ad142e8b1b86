"""The reference reproduces the spec's hand-checked vectors and never imports torch."""

import subprocess
import sys

import numpy as np

import moekit.reference as ref


def test_spec_vector_one():
    ids = np.array([[2, 3, 4], [1, 2, 4], [1, 3, 4], [1, 2, 3]])
    sorted_ids, expert_ids, post_pad = ref.moe_align_block_size(ids, 4, 5)
    assert sorted_ids.tolist() == [3, 6, 9, 12, 0, 4, 10, 12, 1, 7, 11, 12, 2, 5, 8, 12] + [12] * 11
    assert expert_ids.tolist() == [1, 2, 3, 4, -1, -1, -1]
    assert post_pad.tolist() == [16]


def test_spec_vector_two_batched():
    sorted_ids, expert_ids, post_pad = ref.batched_moe_align_block_size(
        8, 4, np.array([2, 3, 0, 6, 8])
    )
    assert expert_ids.tolist() == [0, 1, 3, 3, 4, 4, -1, -1, -1, -1]
    assert post_pad.tolist() == [24]
    assert sorted_ids[:8].tolist() == [0, 1, 40, 40, 8, 9, 10, 40]


def test_permute_round_trip():
    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((6, 4))
    ids = rng.integers(0, 3, (6, 2))
    permuted, offsets, inv, idx = ref.moe_permute(hidden, ids, 3)
    weights = np.ones((6, 2))
    np.testing.assert_allclose(ref.moe_unpermute(permuted, weights, inv, offsets), 2 * hidden)
    assert offsets[-1] == 12


def test_no_torch_import():
    code = "import sys, moekit.reference; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
