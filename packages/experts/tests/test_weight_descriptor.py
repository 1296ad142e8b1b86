"""When the grouped GEMMs may read the weights through a TMA descriptor, and what it spans."""

from __future__ import annotations

import zlib

import pytest
import torch
from helpers import assert_matches, make_problem, reference, run, use_config

from moekit.experts._triton_impl.weight_descriptor import weight_descriptor


def test_plain_weights_are_one_matrix_of_all_experts():
    weights = torch.randn(3, 40, 64)
    desc = weight_descriptor(weights, 32, 16)
    assert desc is not None
    assert list(desc.shape) == [120, 64] and list(desc.block_shape) == [32, 16]
    assert desc.base.data_ptr() == weights.data_ptr()


def test_interleaved_rows_pair_gate_and_up_columns():
    weights = torch.randn(3, 40, 64)
    desc = weight_descriptor(weights, 16, 32, row_pairs=True)
    assert desc is not None and list(desc.shape) == [60, 128]
    # view row e * 20 + n holds gate row 2n in columns [0, 64) and up row 2n + 1 after them
    view = desc.base.view(60, 128)
    torch.testing.assert_close(view[1 * 20 + 7, :64], weights[1, 14], rtol=0, atol=0)
    torch.testing.assert_close(view[1 * 20 + 7, 64:], weights[1, 15], rtol=0, atol=0)


@pytest.mark.parametrize(
    "weights, row_pairs, why",
    [
        (torch.randn(3, 64, 40).transpose(1, 2), False, "not contiguous"),
        (torch.randn(3, 40, 36, dtype=torch.float16), False, "rows not 16-byte aligned"),
        (torch.randn(3, 40, 48), True, "block_k does not divide K: gate blocks would read up"),
    ],
)
def test_layouts_without_a_descriptor_fall_back(weights, row_pairs, why):
    assert weight_descriptor(weights, 16, 32, row_pairs=row_pairs) is None, why


def test_a_triton_without_host_descriptors_loads_through_pointers(monkeypatch):
    from moekit.experts._triton_impl import weight_descriptor as module
    from moekit.experts._triton_impl.configs import GemmConfig

    monkeypatch.setattr(module, "TensorDescriptor", None)
    assert module.weight_descriptor(torch.randn(3, 40, 64), 32, 16) is None
    use_config(monkeypatch, GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_stages=1,
                                       B_TMA=True))  # fmt: skip
    seed = zlib.crc32(b"no host descriptors")
    problem = make_problem(seed, 5, 4, 2, 64, 40, "silu")
    assert_matches(run(problem, torch.float32, "triton"), reference(problem, torch.float32),
                   torch.float32, seed)  # fmt: skip
