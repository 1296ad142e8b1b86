"""FusedMoE / MoERunner against the NumPy reference: routing, experts, scaling, shared experts,
expert parallelism, EPLB (before and after a rearrangement) and checkpoint loading."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from moekit.experts import FusedMoE, SharedExpertsMLP, determine_expert_map
from moekit.reference import experts as ref_experts
from moekit.reference import routing as ref_routing

BACKENDS = ["torch", "triton"]


def seed_of(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def fill_layer(layer, seed: int, scale: float = 0.1) -> dict[str, np.ndarray]:
    """Random logical weights, written into every local slot (replicas get copies); returns the
    logical weights for the reference."""
    rng = np.random.default_rng(seed)
    num_logical = layer.num_experts
    rows = layer.w13_weight.shape[1]
    logical = {
        "w1": rng.standard_normal((num_logical, rows, layer.hidden_size)) * scale,
        "w2": rng.standard_normal((num_logical, layer.hidden_size, layer.intermediate_size))
        * scale,
    }
    if layer.has_bias:
        logical["b1"] = rng.standard_normal((num_logical, rows)) * scale
        logical["b2"] = rng.standard_normal((num_logical, layer.hidden_size)) * scale
    slots = layer.local_logical_experts().numpy()
    dtype = layer.w13_weight.dtype
    with torch.no_grad():
        layer.w13_weight.copy_(torch.from_numpy(logical["w1"][slots]).to(dtype))
        layer.w2_weight.copy_(torch.from_numpy(logical["w2"][slots]).to(dtype))
        if layer.has_bias:
            layer.w13_bias.copy_(torch.from_numpy(logical["b1"][slots]).to(dtype))
            layer.w2_bias.copy_(torch.from_numpy(logical["b2"][slots]).to(dtype))
        if layer.shared_experts is not None:
            for name, param in layer.shared_experts.named_parameters():
                values = rng.standard_normal(tuple(param.shape)) * scale
                param.copy_(torch.from_numpy(values).to(dtype))
                logical[f"shared.{name}"] = values
    return logical


def reference_layer(layer, logical, x: np.ndarray, logits: np.ndarray, routing: dict,
                    scale: float, scale_output: bool) -> np.ndarray:  # fmt: skip
    """The whole layer in NumPy float64: reference routing, reference experts, scale, shared."""
    router_scale = 1.0 if scale_output else scale
    if routing.get("use_grouped_topk"):
        weights, ids = ref_routing.grouped_topk(
            logits, layer.top_k, routing.get("renormalize", True), routing["num_expert_group"],
            routing["topk_group"], routing.get("scoring_func", "softmax"), router_scale,
            routing.get("bias"),
        )  # fmt: skip
    elif routing.get("bias") is not None:
        weights, ids = ref_routing.fused_topk_bias(
            logits, routing["bias"], layer.top_k, routing.get("renormalize", True),
            routing.get("scoring_func", "softmax"), router_scale,
        )  # fmt: skip
    else:
        weights, ids = ref_routing.fused_topk(logits, layer.top_k,
                                              routing.get("renormalize", True),
                                              routing.get("scoring_func", "softmax"))  # fmt: skip
        weights = weights * router_scale
    out = ref_experts.fused_experts(
        x, logical["w1"], logical["w2"], weights, ids, layer.activation.value,
        apply_router_weight_on_input=layer.apply_router_weight_on_input,
        w1_bias=logical.get("b1"), w2_bias=logical.get("b2"),
    )  # fmt: skip
    if scale_output:
        out = out * scale
    if layer.shared_experts is not None:
        gate = x @ logical["shared.gate_proj.weight"].T
        up = x @ logical["shared.up_proj.weight"].T
        out = out + (gate / (1 + np.exp(-gate)) * up) @ logical["shared.down_proj.weight"].T
    return out


def inputs(seed: int, num_tokens: int, hidden: int, num_experts: int):
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((num_tokens, hidden)) / 10
    logits = rng.standard_normal((num_tokens, num_experts)).astype(np.float32)
    return x, logits


def assert_close(actual: torch.Tensor, expected: np.ndarray, seed: int, tol: float = 1e-4):
    scale = max(float(np.abs(expected).max()), 1e-6)
    error = float(np.abs(actual.double().numpy() - expected).max()) / scale
    assert error <= tol, f"relative error {error:.2e} > {tol:.0e} (seed {seed})"


CONFIGS = {
    "softmax": dict(num_experts=8, top_k=2, routing={}),
    "deepseek": dict(
        num_experts=16,
        top_k=4,
        scale=2.5,
        shared=True,
        routing=dict(
            use_grouped_topk=True,
            num_expert_group=4,
            topk_group=2,
            scoring_func="sigmoid",
            bias=True,
        ),
    ),  # fmt: skip
    "biased_sigmoid": dict(num_experts=8, top_k=3, routing=dict(scoring_func="sigmoid", bias=True)),
    "gpt_oss_like": dict(num_experts=6, top_k=2, activation="swigluoai", has_bias=True, routing={}),
    "top1_on_input": dict(num_experts=4, top_k=1, on_input=True, routing=dict(renormalize=False)),
}
CONFIGS["deepseek_scale_output"] = {**CONFIGS["deepseek"], "scale_output": True}


def build(config: dict, seed: int, backend: str, **extra):
    hidden, inter = 32, 16
    routing = dict(config["routing"])
    bias = None
    if routing.pop("bias", None):
        bias = torch.from_numpy(np.random.default_rng(seed + 2).random(config["num_experts"]))
    shared = SharedExpertsMLP(hidden, 24, dtype=torch.float32) if config.get("shared") else None
    layer = FusedMoE(
        config["num_experts"], config["top_k"], hidden, inter, params_dtype=torch.float32,
        e_score_correction_bias=bias, routed_scaling_factor=config.get("scale", 1.0),
        apply_routed_scale_to_output=config.get("scale_output", False),
        activation=config.get("activation", "silu"), has_bias=config.get("has_bias", False),
        apply_router_weight_on_input=config.get("on_input", False), shared_experts=shared,
        backend=backend, **routing, **extra,
    )  # fmt: skip
    reference_routing = dict(config["routing"])
    if bias is not None:
        reference_routing["bias"] = bias.double().numpy()
    return layer, reference_routing


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_layer_matches_reference(name, backend):
    config = CONFIGS[name]
    seed = seed_of(name)
    layer, routing = build(config, seed, backend)
    logical = fill_layer(layer, seed)
    x, logits = inputs(seed, 9, layer.hidden_size, layer.num_experts)
    out = layer(torch.from_numpy(x).float(), torch.from_numpy(logits))
    expected = reference_layer(layer, logical, x, logits, routing, config.get("scale", 1.0),
                               config.get("scale_output", False))  # fmt: skip
    assert_close(out, expected, seed)


@pytest.mark.parametrize("placement", ["linear", "round_robin"])
@pytest.mark.parametrize("ep_size", [2, 3, 5])
def test_expert_parallel_ranks_sum_to_the_whole_layer(ep_size, placement):
    config = CONFIGS["deepseek"]
    seed = seed_of(ep_size, placement)
    whole, _ = build(config, seed, "torch")
    logical = fill_layer(whole, seed)
    x, logits = inputs(seed, 7, whole.hidden_size, whole.num_experts)
    x_t, logits_t = torch.from_numpy(x).float(), torch.from_numpy(logits)
    total = torch.zeros(7, whole.hidden_size)
    held = []
    for rank in range(ep_size):
        part, _ = build(config, seed, "torch", ep_size=ep_size, ep_rank=rank,
                        expert_placement=placement)  # fmt: skip
        part_logical = fill_layer(part, seed)
        assert all(np.array_equal(part_logical[k], logical[k]) for k in ("w1", "w2"))
        total += part(x_t, logits_t)
        held += part.local_logical_experts().tolist()
    assert sorted(held) == list(range(whole.num_experts)), f"seed {seed}"
    torch.testing.assert_close(total, whole(x_t, logits_t), rtol=1e-5, atol=1e-6,
                               msg=lambda m: f"{m} (seed {seed})")  # fmt: skip


@pytest.mark.parametrize("strategy", ["linear", "round_robin"])
@pytest.mark.parametrize("num_experts,ep_size", [(8, 1), (8, 2), (10, 4), (3, 5), (256, 7)])
def test_determine_expert_map(num_experts, ep_size, strategy):
    owner = {}
    base, rem = divmod(num_experts, ep_size)
    for rank in range(ep_size):
        num_local, expert_map, local_ids = determine_expert_map(ep_size, rank, num_experts,
                                                                strategy)  # fmt: skip
        assert num_local == base + (rank < rem) == len(local_ids)
        if strategy == "linear":
            start = rank * base + min(rank, rem)
            assert local_ids.tolist() == list(range(start, start + num_local))
        else:
            assert local_ids.tolist() == list(range(rank, num_experts, ep_size))
        if ep_size == 1:
            assert expert_map is None
            continue
        assert expert_map.dtype == torch.int32
        for local, expert in enumerate(local_ids.tolist()):
            assert int(expert_map[expert]) == local
            owner[expert] = rank
        assert int((expert_map >= 0).sum()) == num_local
    if ep_size > 1:
        assert sorted(owner) == list(range(num_experts))


@pytest.mark.parametrize("backend", BACKENDS)
def test_eplb_records_load_and_rearranging_keeps_outputs(backend):
    config = CONFIGS["deepseek"]
    seed = seed_of("eplb", backend)
    plain, _ = build(config, seed, backend)
    fill_layer(plain, seed)
    layer, _ = build(config, seed, backend, enable_eplb=True, num_redundant_experts=8,
                     eplb_num_ranks=4, eplb_step_interval=2, eplb_window_size=4)  # fmt: skip
    fill_layer(layer, seed)
    assert layer.w13_weight.shape[0] == 24 and layer.global_num_experts == 24
    rng = np.random.default_rng(seed)
    hot = np.zeros(16, dtype=np.float32)
    hot[[1, 2, 5]] = 4.0  # skew the load so the policy must move experts
    batches = [(torch.from_numpy(rng.standard_normal((11, 32)) / 10).float(),
                torch.from_numpy(rng.standard_normal((11, 16)).astype(np.float32) + hot))
               for _ in range(3)]  # fmt: skip
    x, logits = batches[0]
    expected = plain(x, logits)
    before = layer(x, logits)
    torch.testing.assert_close(before, expected, rtol=1e-5, atol=1e-6)
    _, ids = plain.router.select_experts(x, logits)
    assert int(layer.eplb_state.expert_load_pass.sum()) == ids.numel(), f"seed {seed}"
    logical_load = torch.zeros(16, dtype=torch.int64)
    physical = layer.eplb_state.expert_load_pass[0]
    logical_load.scatter_add_(0, layer.eplb_state.physical_to_logical_map[0], physical)
    assert torch.equal(logical_load, torch.bincount(ids.flatten().long(), minlength=16))
    assert layer.eplb_step() is None
    for batch in batches[1:]:
        layer(*batch)
    old_map = layer.eplb_state.physical_to_logical_map.clone()
    rearrangement = layer.eplb_step()
    assert rearrangement is not None and rearrangement.moves, f"seed {seed}: nothing moved"
    assert not torch.equal(old_map, layer.eplb_state.physical_to_logical_map)
    assert rearrangement.balancedness_after >= rearrangement.balancedness_before
    after = layer(x, logits)
    if backend == "triton":  # each output element's K loop is the same whatever the tile's rows
        assert torch.equal(after, before), f"seed {seed}"
    else:  # the torch path's GEMMs may round differently when a group's row count changes
        torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-7,
                                   msg=lambda m: f"{m} (seed {seed})")  # fmt: skip
    # every slot now holds a copy of the logical expert the new map names
    slots = layer.local_logical_experts()
    fresh, _ = build(config, seed, backend)
    logical = fill_layer(fresh, seed)
    w1 = torch.from_numpy(logical["w1"]).float()
    assert torch.equal(layer.w13_weight, w1[slots]), f"seed {seed}"


def test_rearranging_with_several_ranks_in_one_process_is_refused():
    layer, _ = build(CONFIGS["softmax"], 0, "torch", enable_eplb=True, num_redundant_experts=2,
                     ep_size=2)  # fmt: skip
    with pytest.raises(NotImplementedError, match="between ranks"):
        layer.rearrange()


def test_layer_without_eplb_refuses_eplb_calls():
    layer, _ = build(CONFIGS["softmax"], 0, "torch")
    with pytest.raises(RuntimeError, match="enable_eplb"):
        layer.eplb_step()


def test_unloaded_layer_is_nan_not_quietly_wrong():
    layer, _ = build(CONFIGS["softmax"], 0, "torch")
    x, logits = inputs(0, 3, 32, 8)
    assert torch.isnan(layer(torch.from_numpy(x).float(), torch.from_numpy(logits))).all()


BAD_OPTIONS = [
    (dict(num_experts=10, use_grouped_topk=True, num_expert_group=4, topk_group=2),
     ValueError, "multiple of num_expert_group"),
    (dict(enable_eplb=True, num_redundant_experts=1, ep_size=2), ValueError, "divide the replicas"),
    (dict(enable_eplb=True, num_redundant_experts=2, eplb_num_ranks=4), ValueError, "eplb_num_ranks"),
    (dict(apply_router_weight_on_input=True), ValueError, "top_k == 1"),
    (dict(enable_eplb=True, expert_placement="round_robin"), ValueError, "linear"),
    (dict(num_redundant_experts=2), ValueError, "enable_eplb"),
    (dict(expert_placement="striped"), ValueError, "expert_placement"),
    (dict(top_k=9), ValueError, "top_k=9"),
    (dict(num_experts=8.0), TypeError, "num_experts"),
    (dict(activation="tanh"), ValueError, "tanh"),
    (dict(eplb_policy="greedy", enable_eplb=True), ValueError, "eplb_policy"),
    (dict(ep_rank=2, ep_size=2), ValueError, "ep_rank"),
]  # fmt: skip


@pytest.mark.parametrize("options,error,match", BAD_OPTIONS)
def test_incompatible_options_fail_at_construction(options, error, match):
    arguments = dict(num_experts=8, top_k=2, hidden_size=16, intermediate_size=8)
    arguments.update(options)
    with pytest.raises(error, match=match):
        FusedMoE(**arguments)


def test_forward_rejects_bad_inputs():
    layer, _ = build(CONFIGS["softmax"], 0, "torch")
    x, logits = torch.zeros(3, 32), torch.zeros(3, 8)
    with pytest.raises(ValueError, match="hidden_size=32"):
        layer(torch.zeros(3, 31), logits)
    with pytest.raises(ValueError, match="router_logits"):
        layer(x, torch.zeros(3, 7))
    with pytest.raises(TypeError, match="float64"):
        layer(x.double(), logits)
    with pytest.raises(TypeError, match="router_logits"):
        layer(x, logits.numpy())


def test_layer_and_torch_path_work_without_triton():
    """moekit.experts must import and run its torch path where Triton is not installed."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from moekit.experts import FusedMoE, fused_experts\n"
        "layer = FusedMoE(4, 2, 8, 4, params_dtype=torch.float32)\n"
        "[p.data.normal_() for p in layer.parameters()]\n"
        "out = layer(torch.randn(3, 8), torch.randn(3, 4))\n"
        "assert torch.isfinite(out).all()\n"
        "try:\n"
        "    fused_experts(torch.randn(3, 8), layer.w13_weight, layer.w2_weight,\n"
        "                  torch.rand(3, 2), torch.zeros(3, 2, dtype=torch.int32), backend='triton')\n"
        "except RuntimeError as error:\n"
        "    assert 'triton is not installed' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('the Triton backend ran without Triton')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
