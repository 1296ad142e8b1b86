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


# --- the steps of the modular kernel ------------------------------------------------------------


def _local_expert(expert: int, expert_map: np.ndarray | None, num_local: int) -> int:
    if expert < 0:
        return -1
    if expert_map is None:
        return expert if expert < num_local else -1
    return int(expert_map[expert]) if expert < len(expert_map) else -1


def batched_prepare(
    hidden_states: np.ndarray,
    topk_ids: np.ndarray,
    num_local_experts: int,
    max_num_tokens: int,
    expert_map: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(batched [E_local, max_num_tokens, K] float64, expert_num_tokens int32 [E_local])``:
    each slot's token copied to the next free row of its local expert, in token order."""
    x = np.asarray(hidden_states, dtype=np.float64)
    batched = np.zeros((num_local_experts, max_num_tokens, x.shape[1]), dtype=np.float64)
    counts = np.zeros(num_local_experts, dtype=np.int32)
    for t, row in enumerate(np.asarray(topk_ids)):
        for expert in row:
            local = _local_expert(int(expert), expert_map, num_local_experts)
            if local < 0:
                continue
            if counts[local] >= max_num_tokens:
                raise ValueError(f"expert {local} receives more than {max_num_tokens} slots")
            batched[local, counts[local]] = x[t]
            counts[local] += 1
    return batched, counts


def weight_and_reduce_contiguous(per_slot: np.ndarray, topk_weights: np.ndarray,
                                 apply_router_weight_on_input: bool = False) -> np.ndarray:  # fmt: skip
    """``[M, K]``: ``per_slot [M, k, K]`` times the weights (unless applied on the input),
    summed over ``k``."""
    per_slot = np.asarray(per_slot, dtype=np.float64)
    if apply_router_weight_on_input:
        return per_slot.sum(axis=1)
    return (per_slot * np.asarray(topk_weights, np.float64)[..., None]).sum(axis=1)


def weight_and_reduce_batched(
    batched_output: np.ndarray,
    topk_weights: np.ndarray,
    topk_ids: np.ndarray,
    expert_map: np.ndarray | None = None,
    apply_router_weight_on_input: bool = False,
) -> np.ndarray:
    """``[M, K]`` from ``batched_output [E_local, max_tokens, K]``: a slot reads its local
    expert's row at its running rank (token order), weighted unless applied on the input."""
    batched_output = np.asarray(batched_output, dtype=np.float64)
    num_local = batched_output.shape[0]
    out = np.zeros((np.shape(topk_ids)[0], batched_output.shape[2]), dtype=np.float64)
    seen = np.zeros(num_local, dtype=np.int64)
    for t, row in enumerate(np.asarray(topk_ids)):
        for j, expert in enumerate(row):
            local = _local_expert(int(expert), expert_map, num_local)
            if local < 0:
                continue
            weight = 1.0 if apply_router_weight_on_input else float(topk_weights[t][j])
            out[t] += weight * batched_output[local, seen[local]]
            seen[local] += 1
    return out
