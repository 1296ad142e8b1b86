"""Hand-checked routing examples (spec: moekit.routing)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moekit.conformance import routing_adapters as caps
from moekit.conformance.checks import ConformanceError, call_repr

pytestmark = pytest.mark.requires(caps.ROUTING)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softmax_of(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


S = softmax_of([1.0, 3.0, 2.0, 0.0])
ZERO_LOGITS = np.zeros((2, 256))
GROUP_BIAS = [0.0, 0.9, 0.5, 0.5, 0.0, 0.0, 0.3, 0.3]

# name -> (op, args, expected ids, expected weights)
GOLDEN = {
    "softmax-top2": ("fused_topk", dict(logits=np.array([[1.0, 3.0, 2.0, 0.0]]), topk=2,
                     renormalize=False), [[1, 2]], [[S[1], S[2]]]),
    "softmax-top2-renormalised": ("fused_topk", dict(logits=np.array([[1.0, 3.0, 2.0, 0.0]]),
                                  topk=2, renormalize=True), [[1, 2]],
                                  [[sigmoid(1.0), sigmoid(-1.0)]]),
    "ties-to-lower-index": ("fused_topk", dict(logits=np.array([[0.0, 5.0, 5.0, 0.0, 5.0]]),
                            topk=2, renormalize=True), [[1, 2]], [[0.5, 0.5]]),
    "sigmoid-top1": ("fused_topk", dict(logits=np.array([[0.0, 2.0, -1.0]]), topk=1,
                     renormalize=False, scoring_func="sigmoid"), [[1]], [[sigmoid(2.0)]]),
    "all-nan-row": ("fused_topk", dict(logits=np.full((1, 6), np.nan), topk=3,
                    renormalize=True), [[0, 1, 2]], [[0.0, 0.0, 0.0]]),
    "nan-logit-zeroes-softmax-row": ("fused_topk", dict(logits=np.array([[9.0, np.nan, 1.0,
                                     2.0]]), topk=2, renormalize=False), [[0, 1]], [[0.0, 0.0]]),
    "nan-logit-sigmoid-scores-zero": ("fused_topk", dict(logits=np.array([[np.nan, -1.0, 1.0]]),
                                      topk=3, renormalize=False, scoring_func="sigmoid"),
                                      [[2, 1, 0]], [[sigmoid(1.0), sigmoid(-1.0), 0.0]]),
    "bias-selects-weights-unbiased": ("fused_topk_bias", dict(
        logits=np.array([[2.0, 1.0, 0.0, -1.0]]), bias=np.array([0.0, 0.0, 0.0, 5.0]), topk=2,
        renormalize=False, scoring_func="sigmoid"), [[3, 0]], [[sigmoid(-1.0), sigmoid(2.0)]]),
    "bias-renormalise-then-scale": ("fused_topk_bias", dict(
        logits=np.array([[2.0, 1.0, 0.0, -1.0]]), bias=np.array([0.0, 0.0, 0.0, 5.0]), topk=2,
        renormalize=True, scoring_func="sigmoid", routed_scaling_factor=2.0), [[3, 0]],
        [[2 * sigmoid(-1.0) / (sigmoid(-1.0) + sigmoid(2.0)),
          2 * sigmoid(2.0) / (sigmoid(-1.0) + sigmoid(2.0))]]),
    "grouped-keeps-best-group": ("grouped_topk", dict(
        logits=np.array([[0.0, 3.5, 4.0, 0.0, 2.0, 3.0, 0.0, 0.0]]), topk=2, renormalize=False,
        num_expert_group=4, topk_group=1), [[2, 3]],
        [[softmax_of([0.0, 3.5, 4.0, 0.0, 2.0, 3.0, 0.0, 0.0])[i] for i in (2, 3)]]),
    "grouped-bias-scores-top2-sum": ("grouped_topk", dict(
        logits=np.zeros((1, 8)), topk=2, renormalize=True, num_expert_group=4, topk_group=1,
        scoring_func="sigmoid", routed_scaling_factor=2.5, bias=np.array(GROUP_BIAS)),
        [[2, 3]], [[1.25, 1.25]]),
    "deepseek-v3-all-equal-logits": ("grouped_topk", dict(
        logits=ZERO_LOGITS, topk=8, renormalize=True, num_expert_group=8, topk_group=4,
        scoring_func="sigmoid", routed_scaling_factor=2.5, bias=np.zeros(256)),
        [list(range(8))] * 2, [[0.3125] * 8] * 2),
    "deepseek-v3-nan-row": ("grouped_topk", dict(
        logits=np.full((1, 256), np.nan), topk=8, renormalize=True, num_expert_group=8,
        topk_group=4, scoring_func="sigmoid", routed_scaling_factor=2.5, bias=np.zeros(256)),
        [list(range(8))], [[0.0] * 8]),
}  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_routing_golden(adapter, name, dtype):
    if dtype not in ("float32", *adapter.capabilities):
        pytest.skip(f"{adapter.name} lacks capability {dtype}")
    op, args, want_ids, want_weights = GOLDEN[name]
    args = {**args, "dtype": dtype}
    reproduce = call_repr(op, args)
    weights, ids = getattr(adapter, op)(**args)
    want_ids = np.array(want_ids)
    got_ids = np.asarray(ids)
    if caps.SORTED_TOPK not in adapter.capabilities:
        order, want_order = np.argsort(got_ids, axis=1), np.argsort(want_ids, axis=1)
        got_ids = np.take_along_axis(got_ids, order, 1)
        weights = np.take_along_axis(np.asarray(weights), order, 1)
        want_ids = np.take_along_axis(want_ids, want_order, 1)
        want_weights = np.take_along_axis(np.array(want_weights), want_order, 1)
    if not np.array_equal(got_ids, want_ids):
        raise ConformanceError(f"ids {got_ids.tolist()}, expected {want_ids.tolist()}", reproduce)
    # Only the logits are rounded to the dtype: these are exact in fp16/bf16 except 3.5 -> 3.5.
    if not np.allclose(np.asarray(weights, np.float64), want_weights, atol=1e-6, rtol=1e-5):
        raise ConformanceError(
            f"weights {np.asarray(weights).tolist()}, expected {np.asarray(want_weights).tolist()}",
            reproduce,
        )
