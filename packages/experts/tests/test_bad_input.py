"""Bad input is refused before any launch with an error naming the argument."""

from __future__ import annotations

import pytest
import torch

from moekit.experts import FusedMoEQuantConfig, MoEActivation, fused_experts

X = torch.zeros(4, 32)
W1 = torch.zeros(6, 32, 32)
W2 = torch.zeros(6, 32, 16)
WEIGHTS = torch.ones(4, 2)
IDS = torch.zeros(4, 2, dtype=torch.int32)


def call(**overrides):
    args = dict(hidden_states=X, w1=W1, w2=W2, topk_weights=WEIGHTS, topk_ids=IDS, backend="torch")
    args.update(overrides)
    positional = [args.pop(k) for k in ("hidden_states", "w1", "w2", "topk_weights", "topk_ids")]
    return fused_experts(*positional, **args)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(hidden_states=torch.zeros(4, 33)), ValueError, "K=33"),
        (dict(hidden_states=torch.zeros(4, 32, 1)), ValueError, "hidden_states must be"),
        (dict(w2=torch.zeros(6, 32, 32)), ValueError, "w2 must be"),
        (dict(w1=torch.zeros(6, 31, 32)), ValueError, "even w1 width"),
        (dict(w1=torch.zeros(6, 32, 32).half()), TypeError, "w1 is torch.float16"),
        (dict(w1=torch.zeros(6, 32, 32).transpose(1, 2)), ValueError, "stride of 1"),
        (dict(topk_ids=torch.full((4, 2), 6, dtype=torch.int32)), ValueError, "global_num_experts=6"),
        (dict(topk_ids=torch.zeros(4, 2)), TypeError, "topk_ids must be int32"),
        (dict(topk_ids=[[0, 1]] * 4), TypeError, "topk_ids must be a torch.Tensor"),
        (dict(topk_ids=torch.zeros(3, 2, dtype=torch.int32)), ValueError, "topk_ids must be"),
        (dict(topk_weights=torch.ones(4, 3)), ValueError, "topk_weights"),
        (dict(activation="swish"), ValueError, "activation must be one of"),
        (dict(apply_router_weight_on_input=True), ValueError, "top_k == 1"),
        (dict(global_num_experts=8), ValueError, "no expert_map"),
        (dict(expert_map=torch.zeros(6, dtype=torch.int64)), ValueError, "expert_map must be"),
        (dict(w1_bias=torch.zeros(6, 31)), ValueError, "w1_bias"),
        (dict(backend="cuda"), ValueError, "backend"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(overrides, error, match):
    with pytest.raises(error, match=match):
        call(**overrides)


def test_minus_one_ids_are_allowed():
    out = call(topk_ids=torch.full((4, 2), -1, dtype=torch.int32))
    assert torch.equal(out, torch.zeros(4, 32))


def test_quantised_configs_are_refused():
    with pytest.raises(NotImplementedError):
        FusedMoEQuantConfig(quant_dtype=torch.float8_e4m3fn)
    assert MoEActivation.parse("gelu") is MoEActivation.GELU
