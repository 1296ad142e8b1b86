"""The modular kernel: every valid pairing, format checks, chunking, the reduce variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import as_tensors, assert_matches, make_problem, reference

from moekit.experts import (
    BatchedPrepareAndFinalize,
    BatchedTritonExperts,
    ExpertTokensMetadata,
    FusedMoEConfig,
    FusedMoEExpertsMonolithic,
    FusedMoEKernel,
    FusedMoEQuantConfig,
    MoEActivation,
    MoEPrepareAndFinalizeNoEP,
    NaiveBatchedExperts,
    TopKWeightAndReduceContiguous,
    TopKWeightAndReduceDelegate,
    TopKWeightAndReduceNaiveBatched,
    TopKWeightAndReduceNoOP,
    TorchExperts,
    TritonExperts,
)

CONFIG = FusedMoEConfig(num_experts=6, experts_per_token=3, hidden_dim=32, intermediate_size=16,
                        in_dtype=torch.float32)  # fmt: skip


def kernel_result(kernel: FusedMoEKernel, problem: dict, activation="silu") -> torch.Tensor:
    t = as_tensors(problem, torch.float32)
    return kernel(t["hidden_states"], t["w1"], t["w2"], t["topk_weights"], t["topk_ids"],
                  activation)  # fmt: skip


def quant_of(problem: dict) -> FusedMoEQuantConfig:
    t = as_tensors(problem, torch.float32)
    return FusedMoEQuantConfig(w1_bias=t["w1_bias"], w2_bias=t["w2_bias"])


@pytest.mark.parametrize(
    "make_kernel",
    [
        lambda q: FusedMoEKernel(MoEPrepareAndFinalizeNoEP(), TritonExperts(CONFIG, q)),
        lambda q: FusedMoEKernel(MoEPrepareAndFinalizeNoEP(), TorchExperts(CONFIG, q)),
        lambda q: FusedMoEKernel(BatchedPrepareAndFinalize(16, 6),
                                 NaiveBatchedExperts(CONFIG, q, max_num_tokens=16,
                                                     num_dispatchers=1)),
        lambda q: FusedMoEKernel(BatchedPrepareAndFinalize(16, 6),
                                 BatchedTritonExperts(CONFIG, q, max_num_tokens=16,
                                                      num_dispatchers=1)),
    ],
    ids=["noep-triton", "noep-torch", "batched-naive", "batched-triton"],
)  # fmt: skip
def test_every_pairing_matches_the_reference(make_kernel):
    problem = make_problem(21, 11, 6, 3, 32, 16, bias=True)
    kernel = make_kernel(quant_of(problem))
    assert_matches(kernel_result(kernel, problem), reference(problem, torch.float32),
                   torch.float32, 21)  # fmt: skip


@pytest.mark.parametrize("experts_cls", [NaiveBatchedExperts, BatchedTritonExperts])
def test_batched_skips_slots_when_expert_zero_is_empty(experts_cls):
    """A -1 slot must not read expert 0's (unwritten, poisoned) first row."""
    problem = make_problem(25, 6, 6, 2, 32, 16)
    ids = problem["topk_ids"]
    ids[ids == 0] = 5 - (ids[ids == 0] == 5)  # nobody routes to expert 0 ...
    ids[:] = np.where(ids == 0, 4, ids)
    for row in ids:
        if len(set(row)) < 2:
            row[1] = 1 if row[0] != 1 else 2
    ids[2, 1] = -1  # ... and one slot is skipped
    kernel = FusedMoEKernel(BatchedPrepareAndFinalize(16, 6),
                            experts_cls(CONFIG, max_num_tokens=16, num_dispatchers=1))  # fmt: skip
    assert_matches(kernel_result(kernel, problem), reference(problem, torch.float32),
                   torch.float32, 25)  # fmt: skip


def test_batched_prepare_refuses_overflowing_experts():
    problem = make_problem(22, 12, 6, 3, 32, 16)
    problem["topk_ids"][:, 0] = 2  # expert 2 gets 12 slots
    kernel = FusedMoEKernel(BatchedPrepareAndFinalize(8, 6),
                            NaiveBatchedExperts(CONFIG, max_num_tokens=8, num_dispatchers=1))  # fmt: skip
    with pytest.raises(ValueError, match="max_num_tokens=8"):
        kernel_result(kernel, problem)


def test_chunking_gives_the_same_result():
    problem = make_problem(23, 37, 6, 3, 32, 16)
    whole = FusedMoEKernel(MoEPrepareAndFinalizeNoEP(), TorchExperts(CONFIG))
    chunked = FusedMoEKernel(MoEPrepareAndFinalizeNoEP(), TorchExperts(CONFIG), chunk_size=8)
    torch.testing.assert_close(kernel_result(chunked, problem), kernel_result(whole, problem))


class RecordingExperts(TorchExperts):
    """``TorchExperts`` that records the address of every ``output`` it is given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outputs: list[int] = []

    def apply(self, output, *args, **kwargs):
        self.outputs.append(output.data_ptr())
        return super().apply(output, *args, **kwargs)


class CopyingNoEP(MoEPrepareAndFinalizeNoEP):
    finalizes_in_place = False


@pytest.mark.parametrize("chunk_size", [None, 8])
def test_noop_experts_write_the_output_itself(chunk_size):
    """With a finalize that only applies a NoOP reduce, the experts write the returned tensor's
    rows (no [M, K] copy); any other finalize gets a buffer of its own. Both give the reference."""
    problem = make_problem(26, 19, 6, 3, 32, 16)
    want = reference(problem, torch.float32)
    for prepare_finalize, in_place in ((MoEPrepareAndFinalizeNoEP(), True), (CopyingNoEP(), False)):
        experts = RecordingExperts(CONFIG)
        got = kernel_result(FusedMoEKernel(prepare_finalize, experts, chunk_size=chunk_size),
                            problem)  # fmt: skip
        assert_matches(got, want, torch.float32, 26)
        row_bytes = got.shape[1] * got.element_size()
        chunk_starts = [got.data_ptr() + row * row_bytes for row in range(0, 19, chunk_size or 19)]
        assert (experts.outputs == chunk_starts) == in_place, (in_place, chunk_size)


def test_shared_experts_are_added():
    problem = make_problem(24, 5, 6, 3, 32, 16)
    shared = torch.nn.Linear(32, 32, bias=False)
    plain = FusedMoEKernel(MoEPrepareAndFinalizeNoEP(), TorchExperts(CONFIG))
    with_shared = FusedMoEKernel(MoEPrepareAndFinalizeNoEP(), TorchExperts(CONFIG), shared)
    x = torch.tensor(problem["hidden_states"], dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(kernel_result(with_shared, problem),
                                   kernel_result(plain, problem) + shared(x))  # fmt: skip


def test_mixing_formats_or_kinds_is_refused():
    with pytest.raises(ValueError, match="batched_experts"):
        FusedMoEKernel(MoEPrepareAndFinalizeNoEP(),
                       NaiveBatchedExperts(CONFIG, max_num_tokens=4, num_dispatchers=1))  # fmt: skip
    with pytest.raises(ValueError, match="max_num_tokens"):
        TritonExperts(CONFIG, max_num_tokens=4, num_dispatchers=1)

    class Monolithic(FusedMoEExpertsMonolithic):
        @classmethod
        def activation_format(cls):
            return MoEPrepareAndFinalizeNoEP().activation_format

        def workspace_shapes(self, *args):
            return (0,), (0,), (0,)

        def finalize_weight_and_reduce_impl(self):
            return TopKWeightAndReduceNoOP()

        def apply(self, *args):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="Modular"):
        FusedMoEKernel(MoEPrepareAndFinalizeNoEP(), Monolithic(CONFIG))


def test_reduce_variants():
    torch.manual_seed(0)
    per_slot = torch.randn(4, 3, 8)
    weights, ids = torch.rand(4, 3), torch.randint(0, 6, (4, 3))
    want = (per_slot * weights[..., None]).sum(1)
    torch.testing.assert_close(TopKWeightAndReduceContiguous().apply(None, per_slot, weights, ids,
                                                                     False), want)  # fmt: skip
    torch.testing.assert_close(TopKWeightAndReduceContiguous().apply(None, per_slot, weights, ids,
                                                                     True), per_slot.sum(1))  # fmt: skip
    out = torch.full((4, 8), float("nan"))
    TopKWeightAndReduceNoOP().apply(out, want, weights, ids, False)
    torch.testing.assert_close(out, want)
    with pytest.raises(RuntimeError, match="replaced"):
        TopKWeightAndReduceDelegate().apply(None, per_slot, weights, ids, False)
    ids = torch.tensor([[0, 1], [1, 2], [0, -1]])
    batched = torch.randn(3, 4, 8)
    got = TopKWeightAndReduceNaiveBatched(num_local_experts=3).apply(
        None, batched, torch.ones(3, 2), ids, False
    )
    want = torch.stack([batched[0, 0] + batched[1, 0], batched[1, 1] + batched[2, 0],
                        batched[0, 1]])  # fmt: skip
    torch.testing.assert_close(got, want)


def test_metadata_and_capabilities():
    meta = ExpertTokensMetadata.make_from_list([3, 0, 2], "cpu")
    assert (
        meta.expert_num_tokens.tolist() == [3, 0, 2] and meta.expert_num_tokens.dtype == torch.int32
    )
    ok, why = TorchExperts.is_supported_config(CONFIG, FusedMoEQuantConfig(), torch.device("cpu"))
    assert ok and why is None
    assert MoEActivation.SWIGLUOAI.is_gated and not MoEActivation.RELU2_NO_MUL.is_gated
    assert np.array_equal(TorchExperts(CONFIG).workspace_shapes(5, 32, 16, 2, 6, 6, None,
                                                               MoEActivation.SILU)[2], (5, 16))  # fmt: skip
