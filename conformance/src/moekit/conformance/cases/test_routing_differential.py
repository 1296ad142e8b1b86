"""Routing against moekit.reference.routing: seeded logits in every dtype, every function."""

from __future__ import annotations

import numpy as np
import pytest

from moekit.conformance import adapters as caps
from moekit.conformance import generators as gen
from moekit.conformance import routing_adapters as rcaps
from moekit.conformance.routing_checks import check_routing_call

pytestmark = pytest.mark.requires(rcaps.ROUTING)

# (num_tokens, num_experts, top_k): one token, odd sizes, the common model shapes, a larger batch.
SIZES = [(1, 8, 2), (5, 33, 3), (16, 64, 6), (33, 128, 8), (64, 256, 8), (300, 60, 4)]
GROUPED = [  # (num_tokens, num_experts, top_k, num_expert_group, topk_group)
    (1, 8, 2, 4, 2), (9, 64, 6, 8, 3), (40, 256, 8, 8, 4), (17, 160, 6, 8, 3), (5, 16, 4, 1, 1),
]  # fmt: skip
DTYPES = ["float32", "float16", "bfloat16"]


def _needs(adapter, dtype: str, indices_type: str = "int32") -> None:
    if dtype != "float32" and dtype not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {dtype}")
    if indices_type == "int64" and caps.INT64_IDS not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {caps.INT64_IDS}")


def _logits(seed: int, num_tokens: int, num_experts: int, spread: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((num_tokens, num_experts)) * spread
    if num_tokens > 2:  # rows with exact ties, as quantised logits give
        logits[1] = np.round(logits[1])
    return logits


@pytest.mark.parametrize("indices_type", ["int32", "int64"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scoring_func", ["softmax", "sigmoid"])
@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renorm"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_fused_topk_matches_reference(adapter, size, renormalize, scoring_func, dtype,
                                      indices_type):  # fmt: skip
    _needs(adapter, dtype, indices_type)
    num_tokens, num_experts, top_k = size
    seed = gen.stable_seed("topk", size, renormalize, scoring_func, dtype)
    args = dict(logits=_logits(seed, num_tokens, num_experts), topk=top_k,
                renormalize=renormalize, scoring_func=scoring_func, dtype=dtype,
                indices_type=indices_type)  # fmt: skip
    check_routing_call(adapter, "fused_topk", args,
                       rcaps.SORTED_TOPK in adapter.capabilities, f"seed={seed}")  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scoring_func", ["softmax", "sigmoid"])
@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renorm"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_fused_topk_bias_matches_reference(adapter, size, renormalize, scoring_func, dtype):
    _needs(adapter, dtype)
    num_tokens, num_experts, top_k = size
    seed = gen.stable_seed("bias", size, renormalize, scoring_func, dtype)
    rng = np.random.default_rng(seed + 1)
    args = dict(logits=_logits(seed, num_tokens, num_experts),
                bias=(rng.standard_normal(num_experts) * 0.5).astype(np.float32), topk=top_k,
                renormalize=renormalize, scoring_func=scoring_func, routed_scaling_factor=2.5,
                dtype=dtype)  # fmt: skip
    check_routing_call(adapter, "fused_topk_bias", args,
                       rcaps.SORTED_TOPK in adapter.capabilities, f"seed={seed}")  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("scoring_func", ["softmax", "sigmoid"])
@pytest.mark.parametrize("shape", GROUPED, ids=lambda s: "x".join(map(str, s)))
def test_grouped_topk_matches_reference(adapter, shape, scoring_func, with_bias, dtype):
    _needs(adapter, dtype)
    num_tokens, num_experts, top_k, groups, kept = shape
    seed = gen.stable_seed("grouped", shape, scoring_func, with_bias, dtype)
    rng = np.random.default_rng(seed + 1)
    args = dict(logits=_logits(seed, num_tokens, num_experts), topk=top_k, renormalize=True,
                num_expert_group=groups, topk_group=kept, scoring_func=scoring_func,
                routed_scaling_factor=2.5, dtype=dtype,
                bias=(rng.standard_normal(num_experts) * 0.1).astype(np.float32)
                if with_bias else None)  # fmt: skip
    check_routing_call(adapter, "grouped_topk", args,
                       rcaps.SORTED_TOPK in adapter.capabilities, f"seed={seed}")  # fmt: skip


@pytest.mark.parametrize("op", ["fused_topk", "grouped_topk"])
def test_non_finite_logits_match_reference(adapter, op):
    """NaN, +inf and -inf logits scattered over rows, as a broken upstream layer gives."""
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((24, 32))
    for row in range(0, 24, 2):
        logits[row, rng.integers(0, 32, 3)] = rng.choice([np.nan, np.inf, -np.inf], 3)
    logits[3] = -np.inf
    args: dict = dict(logits=logits, topk=4, renormalize=True, scoring_func="sigmoid")
    if op == "grouped_topk":
        args.update(num_expert_group=4, topk_group=2, bias=np.zeros(32, np.float32))
    check_routing_call(adapter, op, args, rcaps.SORTED_TOPK in adapter.capabilities, "seed=7")
    args["scoring_func"] = "softmax"
    check_routing_call(adapter, op, args, rcaps.SORTED_TOPK in adapter.capabilities, "seed=7")
