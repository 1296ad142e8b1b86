"""The Triton kernel (interpreter) and the torch path agree with each other and with the NumPy
reference on seeded logits; every output element is written; ties go to the lower index."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from moekit.reference import routing as ref
from moekit.routing import fused_topk, fused_topk_bias, grouped_topk
from moekit.routing._checks import routing_problem
from moekit.routing._torch_topk import route_torch
from moekit.routing._triton_impl.launch import launch_config, route_triton, triton_supports

BACKENDS = ["torch", "triton"]


def spaced_logits(seed: int, num_tokens: int, num_experts: int) -> torch.Tensor:
    """Logits whose scores are far apart (no near-ties), so ids must match exactly."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(num_experts) * (6.0 / num_experts) - 3.0 for _ in range(num_tokens)]
    return torch.tensor(np.array(rows), dtype=torch.float32)


CASES = {  # name -> (kwargs of routing_problem except logits, reference call)
    "softmax": dict(topk=4, renormalize=False, scoring_func="softmax"),
    "softmax-renorm": dict(topk=4, renormalize=True, scoring_func="softmax"),
    "sigmoid": dict(topk=3, renormalize=False, scoring_func="sigmoid"),
    "sigmoid-bias-scale": dict(topk=6, renormalize=True, scoring_func="sigmoid", bias=True,
                               routed_scaling_factor=2.5),
    "grouped": dict(topk=4, renormalize=True, scoring_func="softmax", grouped=True,
                    num_expert_group=8, topk_group=3),
    "grouped-bias": dict(topk=8, renormalize=True, scoring_func="sigmoid", grouped=True,
                         num_expert_group=8, topk_group=4, bias=True, routed_scaling_factor=2.5),
}  # fmt: skip


def reference_of(logits: np.ndarray, bias, case: dict):
    if case.get("grouped"):
        return ref.grouped_topk(logits, case["topk"], case["renormalize"],
                                case["num_expert_group"], case["topk_group"],
                                case["scoring_func"], case.get("routed_scaling_factor", 1.0),
                                bias)  # fmt: skip
    if bias is not None:
        return ref.fused_topk_bias(logits, bias, case["topk"], case["renormalize"],
                                   case["scoring_func"], case["routed_scaling_factor"])  # fmt: skip
    return ref.fused_topk(logits, case["topk"], case["renormalize"], case["scoring_func"])


@pytest.mark.parametrize("num_tokens", [1, 7, 70])
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_paths_match_reference_with_poisoned_outputs(case_name, num_tokens):
    seed = zlib.crc32(f"{case_name}-{num_tokens}".encode())
    logits = spaced_logits(seed, num_tokens, 64)
    case = dict(CASES[case_name])
    bias = None
    if case.pop("bias", False):
        bias = torch.from_numpy(np.random.default_rng(seed).standard_normal(64).astype("f4") / 9)
    problem = routing_problem(None, logits, case.pop("topk"), case.pop("renormalize"),
                              case.pop("scoring_func"), None, bias=bias, **case)  # fmt: skip
    want_w, want_ids = reference_of(logits.numpy(), None if bias is None else bias.numpy(),
                                    CASES[case_name])  # fmt: skip
    poisoned_w = torch.full((num_tokens, problem.top_k), float("nan"))
    poisoned_ids = torch.full((num_tokens, problem.top_k), -7, dtype=torch.int32)
    for name, (weights, ids) in {
        "torch": route_torch(problem),
        "triton": route_triton(problem, poisoned_w, poisoned_ids),
    }.items():
        np.testing.assert_array_equal(ids.numpy(), want_ids, err_msg=f"{name} seed={seed}")
        np.testing.assert_allclose(weights.numpy(), want_w, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name} seed={seed}")  # fmt: skip
        assert weights.dtype == torch.float32 and ids.dtype == torch.int32


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_lower_index_in_descending_order(backend):
    logits = torch.tensor([[1.0, 4.0, 2.0, 4.0, 2.0, 4.0, 0.0, 2.0]])
    _, ids = fused_topk(None, logits, 6, False, backend=backend)
    assert ids.tolist() == [[1, 3, 5, 2, 4, 7]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("indices_type", [torch.int32, torch.int64])
def test_indices_type_and_zero_tokens(backend, indices_type):
    logits = spaced_logits(3, 5, 16)
    weights, ids = fused_topk(None, logits, 2, True, indices_type=indices_type, backend=backend)
    assert ids.dtype == indices_type and weights.dtype == torch.float32
    _, want = ref.fused_topk(logits.numpy(), 2, True)
    np.testing.assert_array_equal(ids.numpy(), want)
    empty_w, empty_ids = fused_topk(None, logits[:0], 2, True, backend=backend)
    assert empty_w.shape == (0, 2) and empty_ids.shape == (0, 2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_logits_are_scored_in_float32(backend, dtype):
    logits = spaced_logits(5, 9, 32).to(dtype)
    weights, ids = fused_topk_bias(None, logits, torch.zeros(32), 3, True, scoring_func="sigmoid",
                                   backend=backend)  # fmt: skip
    want_w, want_ids = ref.fused_topk(logits.float().numpy(), 3, True, "sigmoid")
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    np.testing.assert_allclose(weights.numpy(), want_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_logits_are_read_correctly(backend):
    wide = spaced_logits(8, 6, 48)
    logits = wide[:, :32]  # rows 48 apart in memory
    weights, ids = grouped_topk(None, logits, 4, True, 4, 2, "sigmoid", backend=backend)
    want_w, want_ids = ref.grouped_topk(logits.numpy(), 4, True, 4, 2, "sigmoid")
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    np.testing.assert_allclose(weights.numpy(), want_w, rtol=1e-5, atol=1e-6)


def test_many_small_groups_and_odd_group_sizes_match_torch():
    for experts, groups, kept, top_k in [(256, 128, 2, 2), (160, 8, 3, 6), (45, 5, 2, 3)]:
        logits = spaced_logits(experts, 11, experts)
        bias = torch.linspace(-0.05, 0.05, experts)
        triton_out = grouped_topk(None, logits, top_k, True, groups, kept, "sigmoid", 1.0, bias,
                                  backend="triton")  # fmt: skip
        torch_out = grouped_topk(None, logits, top_k, True, groups, kept, "sigmoid", 1.0, bias,
                                 backend="torch")  # fmt: skip
        assert torch.equal(triton_out[1], torch_out[1]), (experts, groups)
        torch.testing.assert_close(triton_out[0], torch_out[0])


def test_rows_too_wide_for_registers_take_the_torch_path():
    wide = routing_problem(None, torch.zeros(1, 9000), 2, True, "softmax", None)
    assert not triton_supports(wide)


def test_launch_config_covers_every_row():
    for num_tokens, num_experts in [(1, 8), (3, 256), (1000, 64), (8192, 512)]:
        block_t, block_e, num_warps = launch_config(num_tokens, num_experts)
        assert block_e >= num_experts and block_t >= 1 and num_warps in (1, 2, 4, 8)
