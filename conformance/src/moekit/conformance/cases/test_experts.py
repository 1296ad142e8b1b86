"""Fused experts (spec: moekit.experts): hand-checked problems, properties, differential checks
against the NumPy reference over activations, dtypes, expert maps, biases and both formats."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moekit.conformance import adapters as caps
from moekit.conformance import experts_adapters as ecaps
from moekit.conformance import generators as gen
from moekit.conformance.adapters import ReferenceAdapter
from moekit.conformance.checks import ConformanceError, call_repr

pytestmark = pytest.mark.requires(ecaps.EXPERTS)
REFERENCE = ReferenceAdapter()
ACTIVATIONS = ["silu", "gelu", "gelu_tanh", "swigluoai", "silu_no_mul", "gelu_no_mul",
               "relu2_no_mul"]  # fmt: skip
GATED = ("silu", "gelu", "gelu_tanh", "swigluoai")
# DESIGN.md: float32 GEMMs 1e-4; half precision 2e-2 with inputs randn / 10.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 2e-2}
MAP = np.array([-1, 0, 1, -1, 2, 3, -1, -1], dtype=np.int32)


def problem(seed, num_tokens, num_experts, top_k, hidden, inter, activation="silu", *,
            bias=False, expert_map=None):  # fmt: skip
    rng = np.random.default_rng(seed)
    n = 2 * inter if activation in GATED else inter
    num_global = num_experts if expert_map is None else len(expert_map)
    ids = np.array([rng.permutation(num_global)[:top_k] for _ in range(num_tokens)],
                   dtype=np.int32).reshape(num_tokens, top_k)  # fmt: skip
    if num_tokens > 2:
        ids[1, 0] = -1  # a padded slot
    return dict(
        hidden_states=rng.standard_normal((num_tokens, hidden)) / 10,
        w1=rng.standard_normal((num_experts, n, hidden)) / 10,
        w2=rng.standard_normal((num_experts, hidden, inter)) / 10,
        topk_weights=rng.random((num_tokens, top_k)).astype(np.float32),
        topk_ids=ids, activation=activation, expert_map=expert_map,
        w1_bias=rng.standard_normal((num_experts, n)) / 10 if bias else None,
        w2_bias=rng.standard_normal((num_experts, hidden)) / 10 if bias else None,
    )  # fmt: skip


def check(adapter, args: dict, note: str = "") -> np.ndarray:
    dtype = args.get("dtype", "float32")
    reproduce = call_repr("fused_experts", args) + (f"  # {note}" if note else "")
    want = REFERENCE.fused_experts(**args)
    got = np.asarray(adapter.fused_experts(**args), dtype=np.float64)
    if got.shape != want.shape:
        raise ConformanceError(f"shape {got.shape}, expected {want.shape}", reproduce)
    if not np.isfinite(got).all():
        raise ConformanceError("non-finite output (unwritten rows?)", reproduce)
    tol = TOLERANCE[dtype]
    if not np.allclose(got, want, atol=tol, rtol=tol):
        err = np.abs(got - want).max()
        raise ConformanceError(f"max abs error {err:.3g} above {tol}", reproduce)
    return got


def _needs(adapter, dtype="float32", activation_format="standard"):
    if dtype != "float32" and dtype not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {dtype}")
    if activation_format == "batched" and ecaps.EXPERTS_BATCHED not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {ecaps.EXPERTS_BATCHED}")


def test_golden_two_experts_by_hand(adapter):
    """x = [1, 2]; expert 0: gate row [1, 0], up row [0, 1], W2 = [[1], [3]]; expert 1: gate
    [0, 1], up [1, 1], W2 = [[2], [0]]; weights 0.25 / 0.75 (silu)."""
    silu = lambda v: v / (1 + math.exp(-v))  # noqa: E731
    expert0 = silu(1.0) * 2.0 * np.array([1.0, 3.0])  # g = 1, u = 2
    expert1 = silu(2.0) * 3.0 * np.array([2.0, 0.0])  # g = 2, u = 3
    want = 0.25 * expert0 + 0.75 * expert1
    args = dict(hidden_states=np.array([[1.0, 2.0]]),
                w1=np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]]),
                w2=np.array([[[1.0], [3.0]], [[2.0], [0.0]]]),
                topk_weights=np.array([[0.25, 0.75]], dtype=np.float32),
                topk_ids=np.array([[0, 1]], dtype=np.int32))  # fmt: skip
    got = np.asarray(adapter.fused_experts(**args))
    if not np.allclose(got, want[None], atol=1e-5, rtol=1e-5):
        raise ConformanceError(f"got {got.tolist()}, expected {want.tolist()}",
                               call_repr("fused_experts", args))  # fmt: skip


def test_golden_skipped_and_non_local_slots_contribute_nothing(adapter):
    """Ids -1 and experts mapped to -1 add nothing; a relu2 expert with bias, by hand."""
    args = dict(hidden_states=np.array([[1.0, -1.0]]), w1=np.array([[[2.0, 1.0]]]),
                w2=np.array([[[1.0], [-1.0]]]), topk_weights=np.array([[0.5, 0.9, 0.7]],
                dtype=np.float32), topk_ids=np.array([[1, -1, 0]], dtype=np.int32),
                activation="relu2_no_mul", expert_map=np.array([-1, 0], dtype=np.int32),
                w1_bias=np.array([[0.5]]), w2_bias=np.array([[0.25, 0.0]]))  # fmt: skip
    h = max(2.0 - 1.0 + 0.5, 0.0) ** 2  # 2.25
    want = 0.5 * (np.array([h, -h]) + np.array([0.25, 0.0]))
    got = np.asarray(adapter.fused_experts(**args))
    if not np.allclose(got, want[None], atol=1e-5, rtol=1e-5):
        raise ConformanceError(f"got {got.tolist()}, expected {want.tolist()}",
                               call_repr("fused_experts", args))  # fmt: skip


@pytest.mark.parametrize("activation_format", ["standard", "batched"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activations_with_biases_match_reference(adapter, activation, activation_format):
    _needs(adapter, activation_format=activation_format)
    seed = gen.stable_seed("act", activation)
    args = problem(seed, 7, 6, 3, 40, 24, activation, bias=True)
    check(adapter, {**args, "activation_format": activation_format}, f"seed={seed}")


@pytest.mark.parametrize("activation_format", ["standard", "batched"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("size", [(1, 4, 1, 32, 16), (3, 8, 2, 33, 20), (29, 16, 4, 72, 40),
                                  (64, 8, 8, 24, 8)], ids=lambda s: "x".join(map(str, s)))  # fmt: skip
def test_sizes_and_dtypes_match_reference(adapter, size, dtype, activation_format):
    _needs(adapter, dtype, activation_format)
    seed = gen.stable_seed("size", size, dtype)
    check(adapter, {**problem(seed, *size), "dtype": dtype,
                    "activation_format": activation_format}, f"seed={seed}")  # fmt: skip


@pytest.mark.requires(caps.EXPERT_MAP)
@pytest.mark.parametrize("activation_format", ["standard", "batched"])
def test_expert_map_matches_reference(adapter, activation_format):
    _needs(adapter, activation_format=activation_format)
    args = problem(31, 12, 4, 3, 32, 16, "gelu", expert_map=MAP)
    check(adapter, {**args, "activation_format": activation_format}, "seed=31")


def test_router_weight_on_input_matches_reference(adapter):
    args = problem(32, 9, 4, 1, 32, 16, "silu_no_mul")
    check(adapter, {**args, "apply_router_weight_on_input": True}, "seed=32")


def test_zero_tokens(adapter):
    args = problem(33, 0, 4, 2, 32, 16)
    got = np.asarray(adapter.fused_experts(**args))
    if got.shape != (0, 32):
        raise ConformanceError(f"shape {got.shape}, expected (0, 32)", "M = 0")


def test_properties_linearity_permutation_and_trivial_map(adapter):
    args = problem(34, 10, 6, 2, 32, 16)
    base = np.asarray(adapter.fused_experts(**args), np.float64)
    doubled = adapter.fused_experts(**{**args, "topk_weights": args["topk_weights"] * 2})
    if not np.allclose(doubled, 2 * base, atol=1e-5, rtol=1e-4):
        raise ConformanceError("output is not linear in the routed weights", "seed=34")
    order = np.random.default_rng(34).permutation(10)
    permuted = {**args, "hidden_states": args["hidden_states"][order],
                "topk_weights": args["topk_weights"][order], "topk_ids": args["topk_ids"][order]}  # fmt: skip
    if not np.allclose(adapter.fused_experts(**permuted), base[order], atol=1e-5, rtol=1e-4):
        raise ConformanceError("permuting the tokens does not permute the output", "seed=34")
    if caps.EXPERT_MAP in adapter.capabilities:
        mapped = adapter.fused_experts(**{**args, "expert_map": np.arange(6, dtype=np.int32)})
        if not np.allclose(mapped, base, atol=1e-6, rtol=1e-5):
            raise ConformanceError("an all-local expert_map changes the output", "seed=34")


# The spec's model shapes, E capped (8; Mixtral 4) to bound host memory; K, I, k, activation real.
MODEL_SHAPES = {"mixtral": (4, 2, 4096, 14336, "silu"), "qwen3-30b-a3b": (8, 8, 2048, 768, "silu"),
                "deepseek-v3": (8, 8, 7168, 2048, "silu"),
                "gpt-oss-120b": (8, 4, 2880, 2880, "swigluoai")}  # fmt: skip


@pytest.mark.requires(ecaps.MODEL_SHAPES, caps.BFLOAT16)
@pytest.mark.parametrize("num_tokens", [3, 200])
@pytest.mark.parametrize("model", sorted(MODEL_SHAPES))
def test_model_shapes_bf16_match_reference(adapter, model, num_tokens):
    """bf16 at the real hidden and intermediate sizes; rows are independent, so the reference
    checks six sampled tokens."""
    num_experts, top_k, hidden, inter, activation = MODEL_SHAPES[model]
    seed = gen.stable_seed("model", model, num_tokens)
    args = {**problem(seed, num_tokens, num_experts, top_k, hidden, inter, activation,
                      bias=activation == "swigluoai"), "dtype": "bfloat16"}  # fmt: skip
    got = np.asarray(adapter.fused_experts(**args), dtype=np.float64)
    rows = np.random.default_rng(seed).choice(num_tokens, size=min(6, num_tokens), replace=False)
    sample = {**args, "hidden_states": args["hidden_states"][rows],
              "topk_weights": args["topk_weights"][rows], "topk_ids": args["topk_ids"][rows]}  # fmt: skip
    want = REFERENCE.fused_experts(**sample)
    scale = max(np.abs(want).max(), 1e-6)
    error = np.abs(got[rows] - want).max() / scale
    if not np.isfinite(got).all() or error > 2e-2:
        raise ConformanceError(f"relative error {error:.3g} (or non-finite output)",
                               f"{model} M={num_tokens} seed={seed}")  # fmt: skip


BAD = {
    "hidden-k-mismatch": dict(hidden_states=np.zeros((2, 31))),
    "w2-wrong-shape": dict(w2=np.zeros((4, 32, 17))),
    "id-at-global-experts": dict(topk_ids=np.full((2, 2), 4, dtype=np.int32)),
    "unknown-activation": dict(activation="swish"),
    "weight-on-input-with-k2": dict(apply_router_weight_on_input=True),
}


@pytest.mark.requires(caps.VALIDATES_INPUT)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused(adapter, case):
    args = problem(35, 2, 4, 2, 32, 16)
    with pytest.raises((ValueError, TypeError)):
        adapter.fused_experts(**{**args, **BAD[case]})
