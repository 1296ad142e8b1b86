"""create_router's priority and method types; routers return what their function returns."""

from __future__ import annotations

import pytest
import torch

from moekit.routing import (
    SIMULATION_STRATEGY_ENV_VAR,
    CustomRoutingRouter,
    GroupedTopKRouter,
    RoutingMethodType,
    RoutingSimulatorRouter,
    TopKBiasRouter,
    TopKRouter,
    create_router,
    fused_topk,
    grouped_topk,
)

BIAS = torch.linspace(-0.1, 0.1, 64)


def custom(hidden_states, gating_output, topk, renormalize):
    ids = torch.arange(topk, dtype=torch.int64).expand(gating_output.shape[0], topk)
    return torch.ones(gating_output.shape[0], topk, dtype=torch.float16), ids


@pytest.mark.parametrize(
    "kwargs, router_type, method",
    [
        (dict(), TopKRouter, RoutingMethodType.RenormalizeNaive),
        (dict(renormalize=False), TopKRouter, RoutingMethodType.Default),
        (dict(scoring_func="sigmoid"), TopKRouter, RoutingMethodType.SigmoidRenorm),
        (dict(scoring_func="sigmoid", renormalize=False), TopKRouter, RoutingMethodType.Sigmoid),
        (dict(scoring_func="sigmoid", e_score_correction_bias=BIAS), TopKBiasRouter,
         RoutingMethodType.MiniMax2),
        (dict(e_score_correction_bias=BIAS), TopKBiasRouter, RoutingMethodType.Unspecified),
        (dict(scoring_func="sigmoid", e_score_correction_bias=BIAS, use_grouped_topk=True,
              num_expert_group=8, topk_group=4), GroupedTopKRouter, RoutingMethodType.DeepSeekV3),
        (dict(use_grouped_topk=True, num_expert_group=8, topk_group=4), GroupedTopKRouter,
         RoutingMethodType.RenormalizeNaive),
        (dict(use_grouped_topk=True, num_expert_group=1, topk_group=1), TopKRouter,
         RoutingMethodType.RenormalizeNaive),
        (dict(use_grouped_topk=True, num_expert_group=1, topk_group=1,
              e_score_correction_bias=BIAS, scoring_func="sigmoid"), TopKBiasRouter,
         RoutingMethodType.MiniMax2),
        (dict(custom_routing_function=custom, use_grouped_topk=True, num_expert_group=8,
              topk_group=4), CustomRoutingRouter, RoutingMethodType.Custom),
    ],
)  # fmt: skip
def test_create_router_priority_and_method_type(kwargs, router_type, method, monkeypatch):
    monkeypatch.delenv(SIMULATION_STRATEGY_ENV_VAR, raising=False)
    router = create_router(8, 64, **kwargs)
    assert type(router) is router_type
    assert router.routing_method_type == method


def test_routers_return_their_functions_results():
    torch.manual_seed(0)
    logits = torch.randn(12, 64)
    plain = create_router(4, 64, routed_scaling_factor=2.0, backend="torch")
    weights, ids = plain.select_experts(None, logits)
    want_w, want_ids = fused_topk(None, logits, 4, True, backend="torch")
    assert torch.equal(ids, want_ids) and torch.allclose(weights, want_w * 2.0)
    deepseek = create_router(8, 64, scoring_func="sigmoid", use_grouped_topk=True,
                             num_expert_group=8, topk_group=4, e_score_correction_bias=BIAS,
                             routed_scaling_factor=2.5, backend="torch")  # fmt: skip
    got = deepseek.select_experts(None, logits)
    want = grouped_topk(None, logits, 8, True, 8, 4, "sigmoid", 2.5, BIAS, backend="torch")
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


def test_custom_router_casts_and_checks_its_function():
    router = create_router(3, 64, custom_routing_function=custom, indices_type=torch.int32)
    weights, ids = router.select_experts(None, torch.randn(5, 64))
    assert weights.dtype == torch.float32 and ids.dtype == torch.int32
    assert ids.tolist() == [[0, 1, 2]] * 5
    broken = CustomRoutingRouter(lambda **_: (torch.ones(5, 2), torch.zeros(5, 2)), 3, 64)
    with pytest.raises(ValueError, match="custom_routing_function returned weights"):
        broken.select_experts(None, torch.randn(5, 64))


def test_router_refuses_logits_of_another_width():
    with pytest.raises(ValueError, match="num_experts=64"):
        create_router(2, 64).select_experts(None, torch.randn(3, 32))


def test_simulation_env_var_wraps_the_chosen_router(monkeypatch):
    monkeypatch.setenv(SIMULATION_STRATEGY_ENV_VAR, "uniform_random")
    router = create_router(8, 64, scoring_func="sigmoid", use_grouped_topk=True,
                           num_expert_group=8, topk_group=4, e_score_correction_bias=BIAS)  # fmt: skip
    assert isinstance(router, RoutingSimulatorRouter)
    assert router.routing_method_type == RoutingMethodType.Simulated
    assert router.wrapped_routing_method_type == RoutingMethodType.DeepSeekV3
    weights, ids = router.select_experts(torch.zeros(6, 16), torch.zeros(6, 64))
    assert ids.shape == (6, 8) and all(len(set(r)) == 8 for r in ids.tolist())
    assert torch.equal(weights, torch.ones(6, 8))
    monkeypatch.setenv(SIMULATION_STRATEGY_ENV_VAR, "no_such_strategy")
    with pytest.raises(ValueError, match="available"):
        create_router(8, 64)


def test_method_type_values_interoperate_with_vllm_numbering():
    assert [int(m) for m in RoutingMethodType] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 101, 102]
