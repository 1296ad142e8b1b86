"""Bad input raises a ValueError/TypeError naming the argument, before any kernel launch."""

from __future__ import annotations

import pytest
import torch

from moekit.routing import (
    DistributionBasedRouting,
    GroupedTopKRouter,
    RoutingSimulator,
    create_router,
    fused_topk,
    fused_topk_bias,
    grouped_topk,
)

LOGITS = torch.zeros(4, 16)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: fused_topk(None, LOGITS, 17, True), ValueError, "topk=17"),
        (lambda: fused_topk(None, LOGITS, 0, True), ValueError, "topk must be >= 1"),
        (lambda: fused_topk(None, LOGITS, 2.0, True), TypeError, "topk must be an int"),
        (lambda: fused_topk(None, LOGITS[0], 2, True), ValueError, "gating_output must be 2-D"),
        (lambda: fused_topk(None, LOGITS[None], 2, True), ValueError, "gating_output must be 2-D"),
        (lambda: fused_topk(None, LOGITS.long(), 2, True), TypeError, "gating_output must be"),
        (lambda: fused_topk(None, [[0.0]], 1, True), TypeError, "gating_output must be a torch"),
        (lambda: fused_topk(torch.zeros(3, 8), LOGITS, 2, True), ValueError, "hidden_states"),
        (lambda: fused_topk(None, LOGITS, 2, True, scoring_func="relu"), ValueError,
         "scoring_func"),
        (lambda: fused_topk(None, LOGITS, 2, True, indices_type=torch.int16), TypeError,
         "indices_type"),
        (lambda: fused_topk(None, LOGITS, 2, 1), TypeError, "renormalize"),
        (lambda: fused_topk(None, LOGITS, 2, True, backend="cuda"), ValueError, "backend"),
        (lambda: fused_topk_bias(None, LOGITS, torch.zeros(15), 2, True), ValueError,
         "e_score_correction_bias"),
        (lambda: fused_topk_bias(None, LOGITS, torch.zeros(16, dtype=torch.int32), 2, True),
         TypeError, "e_score_correction_bias"),
        (lambda: fused_topk_bias(None, LOGITS, None, 2, True), TypeError,
         "e_score_correction_bias"),
        (lambda: fused_topk_bias(None, LOGITS, torch.zeros(16), 2, True,
                                 routed_scaling_factor=float("nan")), ValueError,
         "routed_scaling_factor"),
        (lambda: grouped_topk(None, LOGITS, 2, True, 3, 1), ValueError, "num_expert_group=3"),
        (lambda: grouped_topk(None, LOGITS, 2, True, 4, 5), ValueError, "topk_group=5"),
        (lambda: grouped_topk(None, LOGITS, 5, True, 4, 1), ValueError, "topk=5"),
        (lambda: grouped_topk(None, LOGITS, 2, True, None, 1), TypeError, "num_expert_group"),
        (lambda: grouped_topk(None, LOGITS, 2, True, 16, 2, e_score_correction_bias=torch.zeros(16)),
         ValueError, "top-2"),
        (lambda: GroupedTopKRouter(2, 16, 3, 1), ValueError, "num_expert_group=3"),
        (lambda: create_router(2, 16, e_score_correction_bias=torch.zeros(8)), ValueError,
         "e_score_correction_bias"),
        (lambda: create_router(20, 16), ValueError, "top_k=20"),
        (lambda: DistributionBasedRouting("zipf"), ValueError, "distribution"),
        (lambda: DistributionBasedRouting("normal", median=1.0), ValueError, "median"),
        (lambda: RoutingSimulator.simulate_routing(LOGITS, LOGITS, "nope", 2), ValueError,
         "uniform_random"),
        (lambda: RoutingSimulator.simulate_routing(LOGITS, LOGITS, "uniform_random", 17),
         ValueError, "top_k=17"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
