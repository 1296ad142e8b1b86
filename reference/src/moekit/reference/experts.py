"""The fused-experts computation of ``moekit.experts`` in plain NumPy (float64, token by token).

``out[t] = sum_j w[t, j] * (W2[e] @ act(W13[e] @ x[t] + b13[e]) + b2[e])`` with ``e`` the local
expert of ``ids[t, j]``; slots whose id is ``-1``, out of range or not local contribute nothing.
"""

from __future__ import annotations

import math

import numpy as np

SWIGLUOAI_ALPHA = 1.702
SWIGLUOAI_LIMIT = 7.0
GATED = ("silu", "gelu", "gelu_tanh", "swigluoai")

_erf = np.vectorize(math.erf)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def activation(h: np.ndarray, name: str) -> np.ndarray:
    """The activation of a GEMM1 output row (or rows) ``h [..., N]`` (spec: The computation)."""
    h = np.asarray(h, dtype=np.float64)
    if name == "swigluoai":
        gate, up = h[..., 0::2], h[..., 1::2]
        gate = np.minimum(gate, SWIGLUOAI_LIMIT)
        up = np.clip(up, -SWIGLUOAI_LIMIT, SWIGLUOAI_LIMIT)
        return (up + 1.0) * gate * _sigmoid(SWIGLUOAI_ALPHA * gate)
    if name in GATED:
        half = h.shape[-1] // 2
        gate, up = h[..., :half], h[..., half:]
        act = {"silu": lambda g: g * _sigmoid(g), "gelu": _gelu, "gelu_tanh": _gelu_tanh}[name]
        return act(gate) * up
    if name == "silu_no_mul":
        return h * _sigmoid(h)
    if name == "gelu_no_mul":
        return _gelu(h)
    if name == "relu2_no_mul":
        return np.maximum(h, 0.0) ** 2
    raise ValueError(f"unknown activation {name!r}")


def fused_experts(
    hidden_states: np.ndarray,
    w1: np.ndarray,
    w2: np.ndarray,
    topk_weights: np.ndarray,
    topk_ids: np.ndarray,
    activation_name: str = "silu",
    expert_map: np.ndarray | None = None,
    global_num_experts: int | None = None,
    apply_router_weight_on_input: bool = False,
    w1_bias: np.ndarray | None = None,
    w2_bias: np.ndarray | None = None,
) -> np.ndarray:
    """float64 ``[M, K]`` (see the module docstring)."""
    x = np.asarray(hidden_states, dtype=np.float64)
    w1, w2 = np.asarray(w1, np.float64), np.asarray(w2, np.float64)
    num_local = w1.shape[0]
    if global_num_experts is None:
        global_num_experts = len(expert_map) if expert_map is not None else num_local
    out = np.zeros((x.shape[0], w2.shape[1]), dtype=np.float64)
    for t in range(x.shape[0]):
        for j in range(np.shape(topk_ids)[1]):
            expert = int(topk_ids[t][j])
            if not 0 <= expert < global_num_experts:
                continue
            local = int(expert_map[expert]) if expert_map is not None else expert
            if local < 0:
                continue
            weight = float(topk_weights[t][j])
            row = x[t] * weight if apply_router_weight_on_input else x[t]
            h = w1[local] @ row
            if w1_bias is not None:
                h = h + np.asarray(w1_bias, np.float64)[local]
            y = w2[local] @ activation(h, activation_name)
            if w2_bias is not None:
                y = y + np.asarray(w2_bias, np.float64)[local]
            out[t] += y if apply_router_weight_on_input else weight * y
    return out
