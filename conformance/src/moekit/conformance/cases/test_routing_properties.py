"""Properties of routing that hold for any logits (hypothesis), checked without the reference's
choice: distinct in-range ids, weights that sum to 1 or the scale, the bias touching selection
only, descending keys, and group masking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moekit.conformance import routing_adapters as rcaps
from moekit.conformance.checks import ConformanceError, call_repr, round_to_dtype
from moekit.reference import routing

pytestmark = pytest.mark.requires(rcaps.ROUTING)


@st.composite
def routing_problems(draw, grouped: bool):
    groups = draw(st.sampled_from([1, 2, 4, 8])) if grouped else 1
    per_group = draw(st.integers(2, 12))
    num_experts = groups * per_group if grouped else draw(st.integers(1, 96))
    kept = draw(st.integers(1, groups))
    top_k = draw(st.integers(1, min(num_experts, kept * per_group if grouped else num_experts)))
    num_tokens = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    args = dict(
        logits=rng.standard_normal((num_tokens, num_experts)) * draw(st.sampled_from([0.1, 3.0])),
        topk=top_k,
        renormalize=draw(st.booleans()),
        scoring_func=draw(st.sampled_from(["softmax", "sigmoid"])),
        routed_scaling_factor=draw(st.sampled_from([1.0, 2.5])),
        bias=(rng.standard_normal(num_experts) * 0.3).astype(np.float32)
        if draw(st.booleans()) else None,
    )  # fmt: skip
    if grouped:
        args.update(num_expert_group=groups, topk_group=kept)
    return args, seed


def _call(adapter, args):
    if "num_expert_group" in args:
        return "grouped_topk", adapter.grouped_topk(**args)
    if args["bias"] is None:
        plain = {k: v for k, v in args.items() if k not in ("bias", "routed_scaling_factor")}
        return "fused_topk", adapter.fused_topk(**plain)
    return "fused_topk_bias", adapter.fused_topk_bias(**args)


def _check_properties(adapter, args, seed):
    op, (weights, ids) = _call(adapter, args)
    reproduce = call_repr(op, args) + f"  # seed={seed}"
    weights, ids = np.asarray(weights, np.float64), np.asarray(ids)

    def fail(what):
        raise ConformanceError(what, reproduce)

    logits = round_to_dtype(args["logits"], "float32")
    num_tokens, num_experts = logits.shape
    if ids.shape != (num_tokens, args["topk"]) or np.any((ids < 0) | (ids >= num_experts)):
        fail("ids of the wrong shape or outside [0, num_experts)")
    if any(len(set(row)) != len(row) for row in ids.tolist()):
        fail("a token chose the same expert twice")
    scale = args["routed_scaling_factor"] if op != "fused_topk" else 1.0
    scores = np.stack([routing.expert_scores(row, args["scoring_func"]) for row in logits])
    unbiased = np.take_along_axis(scores, ids.astype(np.int64), 1)
    if args["renormalize"]:
        if not np.allclose(weights.sum(axis=1), scale, rtol=1e-5, atol=1e-5):
            fail(f"renormalised weights sum to {weights.sum(axis=1)}, not {scale}")
        unbiased = unbiased / unbiased.sum(axis=1, keepdims=True)
    if not np.allclose(weights, unbiased * scale, rtol=1e-5, atol=1e-6):
        fail("weights are not the (unbiased) scores of the chosen experts")
    keys = routing.selection_keys(logits, args["scoring_func"], args["bias"],
                                  args.get("num_expert_group"), args.get("topk_group"))  # fmt: skip
    chosen = np.take_along_axis(keys, ids.astype(np.int64), 1)
    if rcaps.SORTED_TOPK in adapter.capabilities and np.any(
        np.diff(chosen, axis=1) > 1e-5 * np.abs(chosen[:, 1:]) + 1e-7
    ):
        fail("slots are not in descending key order")
    kth = np.sort(keys, axis=1)[:, ::-1][:, args["topk"] - 1]
    if np.any(chosen < kth[:, None] - 1e-5 * np.abs(kth[:, None]) - 1e-7):
        fail("a chosen expert ranks below the k-th best key")
    if "num_expert_group" in args:
        group_size = num_experts // args["num_expert_group"]
        for row in ids:
            if len(set((row // group_size).tolist())) > args["topk_group"]:
                fail(f"row {row.tolist()} spans more than topk_group={args['topk_group']} groups")


@given(problem=routing_problems(grouped=False))
def test_topk_properties(adapter, problem):
    _check_properties(adapter, *problem)


@given(problem=routing_problems(grouped=True))
def test_grouped_topk_properties(adapter, problem):
    _check_properties(adapter, *problem)


@pytest.mark.parametrize("seed", range(4))
def test_bias_changes_selection_not_weights(adapter, seed):
    """A bias that favours other experts changes the ids; each chosen expert keeps the weight
    it has without a bias."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((8, 16))
    bias = np.zeros(16, np.float32)
    bias[rng.permutation(16)[:4]] = 10.0
    plain_w, plain_ids = adapter.fused_topk(logits, 4, False, "sigmoid")
    biased_w, biased_ids = adapter.fused_topk_bias(logits, bias, 4, False, "sigmoid")
    reproduce = call_repr("fused_topk_bias", dict(logits=logits, bias=bias, topk=4,
                          renormalize=False, scoring_func="sigmoid")) + f"  # seed={seed}"  # fmt: skip
    if not np.all(np.isin(biased_ids, np.flatnonzero(bias))):
        raise ConformanceError("a +10 bias did not pull its experts into the choice", reproduce)
    if np.array_equal(np.sort(plain_ids, 1), np.sort(biased_ids, 1)):
        raise ConformanceError("the bias did not change the selection", reproduce)
    scores = 1.0 / (1.0 + np.exp(-round_to_dtype(logits, "float32")))
    if not np.allclose(biased_w, np.take_along_axis(scores, biased_ids.astype(int), 1),
                       rtol=1e-5, atol=1e-6):  # fmt: skip
        raise ConformanceError("biased weights are not the unbiased scores", reproduce)
