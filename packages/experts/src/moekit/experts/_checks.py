"""Validation of a fused-experts call: shapes, dtypes, strides and ids, before any launch."""

from __future__ import annotations

import torch

from moekit.experts.activation import MoEActivation
from moekit.experts.weight_chunks import check_chunks, experts_and_rows, is_chunked

_FLOAT = (torch.float16, torch.bfloat16, torch.float32)


def check_int(value: object, name: str, minimum: int) -> int:
    """``value`` as an int ``>= minimum``: ``TypeError`` for a non-int (bools included),
    ``ValueError`` below the minimum, both naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _tensor(value: object, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_experts_call(hidden_states, w1, w2, topk_weights, topk_ids, activation,
                       global_num_experts, expert_map, apply_router_weight_on_input,
                       w1_bias=None, w2_bias=None, check_ids=True) -> tuple[MoEActivation, int]:  # fmt: skip
    """Validate; return ``(activation, global_num_experts)`` with the default filled in."""
    act = MoEActivation.parse(activation)
    x = _tensor(hidden_states, "hidden_states")
    w1, w2 = _tensor(w1, "w1"), _tensor(w2, "w2")
    weights, ids = _tensor(topk_weights, "topk_weights"), _tensor(topk_ids, "topk_ids")
    if x.dim() != 2:
        raise ValueError(f"hidden_states must be 2-D [M, K], got {tuple(x.shape)}")
    if x.dtype not in _FLOAT:
        raise TypeError(f"hidden_states must be float16/bfloat16/float32, got {x.dtype}")
    for name, w in (("w1", w1), ("w2", w2)):
        if w.dim() not in (3, 4):
            raise ValueError(f"{name} must be 3-D [E_local, rows, cols] or its K chunks "
                             f"(chunk_weights), got {tuple(w.shape)}")  # fmt: skip
        if w.dtype != x.dtype:
            raise TypeError(f"{name} is {w.dtype} but hidden_states is {x.dtype}")
        if w.stride(-1) != 1:
            raise ValueError(f"{name} must have a last-dimension stride of 1, got {w.stride()}")
    chunked = is_chunked(w1)
    if is_chunked(w2) != chunked:
        raise ValueError("w1 and w2 must both be in K chunks (chunk_weights) or neither, got "
                         f"{tuple(w1.shape)} and {tuple(w2.shape)}")  # fmt: skip
    num_local, n = experts_and_rows(w1)
    k = x.shape[1] if chunked else w1.shape[2]
    if k != x.shape[1]:
        raise ValueError(f"w1 is [E, N, K={k}] but hidden_states has K={x.shape[1]}")
    n_act = n // 2 if act.is_gated else n
    if act.is_gated and n % 2:
        raise ValueError(f"gated activation {act.value} needs an even w1 width N, got {n}")
    if chunked:
        check_chunks(w1, "w1", num_local, n, k)
        check_chunks(w2, "w2", num_local, k, n_act)
    elif tuple(w2.shape) != (num_local, k, n_act):
        raise ValueError(
            f"w2 must be [E_local={num_local}, K={k}, I={n_act}] for w1 {tuple(w1.shape)} and "
            f"activation {act.value}, got {tuple(w2.shape)}"
        )
    if ids.dim() != 2 or ids.shape[0] != x.shape[0]:
        raise ValueError(f"topk_ids must be [M={x.shape[0]}, top_k], got {tuple(ids.shape)}")
    if ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"topk_ids must be int32 or int64, got {ids.dtype}")
    if tuple(weights.shape) != tuple(ids.shape):
        raise ValueError(
            f"topk_weights {tuple(weights.shape)} must match topk_ids {tuple(ids.shape)}"
        )
    if not weights.is_floating_point():
        raise TypeError(f"topk_weights must be floating, got {weights.dtype}")
    if apply_router_weight_on_input and ids.shape[1] != 1:
        raise ValueError(f"apply_router_weight_on_input needs top_k == 1, got top_k={ids.shape[1]}")
    for name, bias, width in (("w1_bias", w1_bias, n), ("w2_bias", w2_bias, k)):
        if bias is not None and tuple(_tensor(bias, name).shape) != (num_local, width):
            raise ValueError(
                f"{name} must be [E_local={num_local}, {width}], got {tuple(bias.shape)}"
            )
    if global_num_experts is None or global_num_experts == -1:
        global_num_experts = expert_map.shape[0] if expert_map is not None else num_local
    if expert_map is not None:
        emap = _tensor(expert_map, "expert_map")
        if emap.dtype != torch.int32 or tuple(emap.shape) != (global_num_experts,):
            raise ValueError(
                f"expert_map must be int32 [global_num_experts={global_num_experts}], got "
                f"{emap.dtype} {tuple(emap.shape)}"
            )
    elif global_num_experts != num_local:
        raise ValueError(
            f"global_num_experts={global_num_experts} differs from the {num_local} local experts "
            "of w1 but no expert_map says which are local"
        )
    devices = {t.device for t in (x, w1, w2, weights, ids)}
    if len(devices) != 1:
        raise ValueError(f"tensors are on several devices: {sorted(map(str, devices))}")
    if check_ids and ids.numel() and int(ids.max()) >= global_num_experts:
        # One host sync; pass check_ids=False inside CUDA-graph capture.
        raise ValueError(
            f"topk_ids holds {int(ids.max())}, at or above global_num_experts={global_num_experts} "
            "(-1 marks a slot to skip)"
        )
    return act, global_num_experts
