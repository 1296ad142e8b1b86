"""Bad routing input is refused with ValueError/TypeError (capability validates_input)."""

from __future__ import annotations

import numpy as np
import pytest

from moekit.conformance import adapters as caps
from moekit.conformance import routing_adapters as rcaps

pytestmark = [pytest.mark.requires(caps.VALIDATES_INPUT), pytest.mark.requires(rcaps.ROUTING)]
LOGITS = np.zeros((4, 16))

BAD_CALLS = {
    "topk-above-experts": ("fused_topk", dict(logits=LOGITS, topk=17, renormalize=True)),
    "topk-zero": ("fused_topk", dict(logits=LOGITS, topk=0, renormalize=True)),
    "logits-1d": ("fused_topk", dict(logits=np.zeros(16), topk=2, renormalize=True)),
    "logits-3d": ("fused_topk", dict(logits=np.zeros((2, 2, 16)), topk=2, renormalize=True)),
    "unknown-scoring": ("fused_topk", dict(logits=LOGITS, topk=2, renormalize=True,
                                           scoring_func="softplus")),
    "bias-wrong-length": ("fused_topk_bias", dict(logits=LOGITS, bias=np.zeros(15), topk=2,
                                                  renormalize=True)),
    "groups-do-not-divide": ("grouped_topk", dict(logits=LOGITS, topk=2, renormalize=True,
                                                  num_expert_group=3, topk_group=1)),
    "topk-group-above-groups": ("grouped_topk", dict(logits=LOGITS, topk=2, renormalize=True,
                                                     num_expert_group=4, topk_group=5)),
    "topk-above-kept-experts": ("grouped_topk", dict(logits=LOGITS, topk=5, renormalize=True,
                                                     num_expert_group=4, topk_group=1)),
    "grouped-bias-wrong-length": ("grouped_topk", dict(logits=LOGITS, topk=2, renormalize=True,
                                                       num_expert_group=4, topk_group=2,
                                                       bias=np.zeros(8))),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_routing_input_is_refused(adapter, case):
    op, args = BAD_CALLS[case]
    with pytest.raises((ValueError, TypeError)):
        getattr(adapter, op)(**args)
