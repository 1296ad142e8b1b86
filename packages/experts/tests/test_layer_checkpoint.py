"""Loading a FusedMoE layer from a safetensors checkpoint in the usual naming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moekit.experts import FusedMoE, SharedExpertsMLP, make_expert_params_mapping
from moekit.experts.layer import expected_weights

safetensors_torch = pytest.importorskip("safetensors.torch")

PREFIX = "model.layers.3.mlp"
HIDDEN, INTER, SHARED_INTER = 24, 8, 16


def write_checkpoint(path, seed: int, num_experts: int, *, bias: bool = False,
                     shared: bool = False, router_bias: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """One tensor per expert and projection, plus unrelated tensors a model file also holds."""
    rng = np.random.default_rng(seed)

    def tensor(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(shape) / 10).float()

    tensors = {f"{PREFIX}.gate.weight": tensor(num_experts, HIDDEN),
               "model.layers.2.mlp.experts.0.gate_proj.weight": tensor(INTER, HIDDEN)}  # fmt: skip
    for expert in range(num_experts):
        base = f"{PREFIX}.experts.{expert}"
        tensors[f"{base}.gate_proj.weight"] = tensor(INTER, HIDDEN)
        tensors[f"{base}.up_proj.weight"] = tensor(INTER, HIDDEN)
        tensors[f"{base}.down_proj.weight"] = tensor(HIDDEN, INTER)
        if bias:
            tensors[f"{base}.gate_proj.bias"] = tensor(INTER)
            tensors[f"{base}.up_proj.bias"] = tensor(INTER)
            tensors[f"{base}.down_proj.bias"] = tensor(HIDDEN)
    if shared:
        tensors[f"{PREFIX}.shared_experts.gate_proj.weight"] = tensor(SHARED_INTER, HIDDEN)
        tensors[f"{PREFIX}.shared_experts.up_proj.weight"] = tensor(SHARED_INTER, HIDDEN)
        tensors[f"{PREFIX}.shared_experts.down_proj.weight"] = tensor(HIDDEN, SHARED_INTER)
    if router_bias:
        tensors[f"{PREFIX}.gate.e_score_correction_bias"] = tensor(num_experts)
    safetensors_torch.save_file(tensors, str(path))
    return tensors


def expert(tensors, index: int, name: str, kind: str = "weight") -> torch.Tensor:
    return tensors[f"{PREFIX}.experts.{index}.{name}.{kind}"]


@pytest.mark.parametrize("ep_rank", [0, 1])
def test_checkpoint_fills_the_stacked_parameters(tmp_path, ep_rank):
    path = tmp_path / "model.safetensors"
    tensors = write_checkpoint(path, 11 + ep_rank, 6, shared=True, router_bias=True)
    layer = FusedMoE(6, 2, HIDDEN, INTER, params_dtype=torch.float32, ep_size=2, ep_rank=ep_rank,
                     e_score_correction_bias=torch.zeros(6),
                     shared_experts=SharedExpertsMLP(HIDDEN, SHARED_INTER, dtype=torch.float32))  # fmt: skip
    loaded = layer.load_checkpoint(path, prefix=PREFIX)
    assert f"{PREFIX}.gate.weight" not in loaded  # the router's gate lives outside the layer
    for local, global_id in enumerate(range(3 * ep_rank, 3 * ep_rank + 3)):
        assert torch.equal(layer.w13_weight[local, :INTER], expert(tensors, global_id, "gate_proj"))
        assert torch.equal(layer.w13_weight[local, INTER:], expert(tensors, global_id, "up_proj"))
        assert torch.equal(layer.w2_weight[local], expert(tensors, global_id, "down_proj"))
    assert torch.equal(layer.shared_experts.down_proj.weight,
                       tensors[f"{PREFIX}.shared_experts.down_proj.weight"])  # fmt: skip
    assert torch.equal(layer.e_score_correction_bias,
                       tensors[f"{PREFIX}.gate.e_score_correction_bias"])  # fmt: skip
    # the router reads the loaded bias (the same tensor, not a copy taken at construction)
    assert layer.router.e_score_correction_bias is layer.e_score_correction_bias
    assert not torch.isnan(layer.w13_weight).any() and not torch.isnan(layer.w2_weight).any()


def test_interleaved_activation_and_biases(tmp_path):
    path = tmp_path / "gpt_oss.safetensors"
    tensors = write_checkpoint(path, 5, 4, bias=True)
    layer = FusedMoE(4, 2, HIDDEN, INTER, params_dtype=torch.float32, activation="swigluoai",
                     has_bias=True)  # fmt: skip
    layer.load_checkpoint(path, prefix=PREFIX)
    for index in range(4):
        assert torch.equal(layer.w13_weight[index, 0::2], expert(tensors, index, "gate_proj"))
        assert torch.equal(layer.w13_weight[index, 1::2], expert(tensors, index, "up_proj"))
        assert torch.equal(layer.w13_bias[index, 0::2], expert(tensors, index, "gate_proj", "bias"))
        assert torch.equal(layer.w13_bias[index, 1::2], expert(tensors, index, "up_proj", "bias"))
        assert torch.equal(layer.w2_bias[index], expert(tensors, index, "down_proj", "bias"))


def test_redundant_slots_get_copies_and_outputs_match(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = write_checkpoint(path, 3, 4)
    plain = FusedMoE(4, 2, HIDDEN, INTER, params_dtype=torch.float32, backend="torch")
    plain.load_checkpoint(path, prefix=PREFIX)
    eplb = FusedMoE(4, 2, HIDDEN, INTER, params_dtype=torch.float32, enable_eplb=True,
                    num_redundant_experts=2, eplb_num_ranks=3, backend="torch")  # fmt: skip
    eplb.load_checkpoint(path, prefix=PREFIX)
    assert torch.equal(eplb.w2_weight[4], expert(tensors, 0, "down_proj"))
    assert torch.equal(eplb.w2_weight[5], expert(tensors, 1, "down_proj"))
    generator = torch.Generator().manual_seed(3)
    x, logits = torch.randn(5, HIDDEN, generator=generator), torch.randn(5, 4, generator=generator)
    torch.testing.assert_close(eplb(x, logits), plain(x, logits), rtol=1e-6, atol=1e-7)


def test_missing_tensor_is_named_with_its_shape(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = write_checkpoint(path, 1, 4)
    del tensors[f"{PREFIX}.experts.2.up_proj.weight"]
    safetensors_torch.save_file(tensors, str(path))
    layer = FusedMoE(4, 2, HIDDEN, INTER, params_dtype=torch.float32)
    message = rf"{PREFIX}\.experts\.2\.up_proj\.weight \(expected shape \[{INTER}, {HIDDEN}\]\)"
    with pytest.raises(ValueError, match=message):
        layer.load_checkpoint(path, prefix=PREFIX)


def test_misshaped_tensor_is_named_with_both_shapes(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = write_checkpoint(path, 2, 4)
    tensors[f"{PREFIX}.experts.1.down_proj.weight"] = torch.zeros(HIDDEN, INTER + 1)
    safetensors_torch.save_file(tensors, str(path))
    layer = FusedMoE(4, 2, HIDDEN, INTER, params_dtype=torch.float32)
    match = rf"experts\.1\.down_proj\.weight has shape \[{HIDDEN}, {INTER + 1}\], expected"
    with pytest.raises(ValueError, match=match):
        layer.load_checkpoint(path, prefix=PREFIX)


def test_wrong_prefix_loads_nothing_and_says_so(tmp_path):
    path = tmp_path / "model.safetensors"
    write_checkpoint(path, 2, 4)
    layer = FusedMoE(4, 2, HIDDEN, INTER, params_dtype=torch.float32)
    with pytest.raises(ValueError, match="lacks 12 tensor"):
        layer.load_checkpoint(path, prefix="model.layers.9.mlp")
    with pytest.raises(FileNotFoundError, match="nope"):
        layer.load_checkpoint(tmp_path / "nope.safetensors")


def test_expert_params_mapping():
    mapping = make_expert_params_mapping("w1", "w2", "w3", num_experts=3, num_redundant_experts=1)
    assert len(mapping) == 12
    assert mapping[0] == ("w13_", "experts.0.w1.", 0, "w1")
    assert mapping[1] == ("w13_", "experts.0.w3.", 0, "w3")
    assert mapping[2] == ("w2_", "experts.0.w2.", 0, "w2")
    assert mapping[-3:] == [("w13_", "experts.0.w1.", 3, "w1"), ("w13_", "experts.0.w3.", 3, "w3"),
                            ("w2_", "experts.0.w2.", 3, "w2")]  # fmt: skip
    with pytest.raises(ValueError, match="num_experts"):
        make_expert_params_mapping(num_experts=0)
    with pytest.raises(ValueError, match="ckpt_up_proj_name"):
        make_expert_params_mapping("gate", "down", "up.proj", num_experts=2)


def test_expected_weights_lists_every_local_tensor():
    layer = FusedMoE(4, 2, HIDDEN, INTER, params_dtype=torch.float32, ep_size=2, ep_rank=1,
                     has_bias=True)  # fmt: skip
    expected = expected_weights(layer)
    assert len(expected) == 2 * 3 * 2
    assert expected["experts.3.down_proj.weight"] == (HIDDEN, INTER)
    assert expected["experts.2.gate_proj.bias"] == (INTER,)
    assert "experts.0.gate_proj.weight" not in expected
