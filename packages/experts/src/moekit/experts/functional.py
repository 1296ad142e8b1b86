"""``fused_experts``: the one-call entry point engines and tests use."""

from __future__ import annotations

import torch

from moekit.align import Backend, resolve_backend
from moekit.experts.activation import MoEActivation
from moekit.experts.config import FusedMoEConfig, FusedMoEQuantConfig
from moekit.experts.kernel import FusedMoEKernel
from moekit.experts.prepare_finalize import MoEPrepareAndFinalizeNoEP
from moekit.experts.torch_experts import TorchExperts
from moekit.experts.triton_experts import TritonExperts
from moekit.experts.weight_chunks import experts_and_rows


def fused_experts(
    hidden_states: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    activation: str | MoEActivation = "silu",
    expert_map: torch.Tensor | None = None,
    global_num_experts: int | None = None,
    apply_router_weight_on_input: bool = False,
    w1_bias: torch.Tensor | None = None,
    w2_bias: torch.Tensor | None = None,
    backend: Backend = "auto",
    check_ids: bool = True,
) -> torch.Tensor:
    """``out[t] = sum_j w[t, j] * (W2[e] @ act(W13[e] @ x[t] + b13[e]) + b2[e])``, ``e = ids[t, j]``.

    Args:
        hidden_states: ``[M, K]`` float16 / bfloat16 / float32.
        w1: ``[E_local, N, K]``, same dtype; for gated activations rows ``[0, N/2)`` are the
            gate and ``[N/2, N)`` up (``swigluoai``: interleaved). Last-dimension stride 1.
        w2: ``[E_local, K, N']`` with ``N' = N/2`` (gated) or ``N``. ``w1`` and ``w2`` may
            both be stored in K chunks instead (:func:`chunk_weights`, Triton backend only): the
            same result, read faster.
        topk_weights: ``[M, k]`` float. topk_ids: ``[M, k]`` int32/int64 **global** ids;
            ``-1`` skips a slot.
        activation: a :class:`MoEActivation` or its name.
        expert_map: int32 ``[global_num_experts]``, global -> local id or -1 (expert
            parallelism: slots of non-local experts contribute nothing).
        global_num_experts: defaults to ``len(expert_map)`` or ``E_local``.
        apply_router_weight_on_input: scale the input by the weight (``k == 1`` only).
        w1_bias: ``[E_local, N]``, added after GEMM1.
        w2_bias: ``[E_local, K]``, added after GEMM2 (before the routed weight).
        backend: ``"triton"`` (:class:`TritonExperts`), ``"torch"`` (:class:`TorchExperts`) or
            ``"auto"`` (Triton on GPUs).
        check_ids: refuse ids ``>= global_num_experts`` (one host sync; off in graph capture).

    Returns:
        ``[M, K]`` in the input dtype.

    Raises:
        TypeError: a non-tensor input, mismatched dtypes, weights in K chunks on the torch
            backend.
        ValueError: mismatched shapes, a last-dimension stride other than 1, ids at or above
            ``global_num_experts``, an unknown activation, ``apply_router_weight_on_input``
            with ``k > 1``, chunks not those of ``chunk_weights``, or only one weight in chunks.
    """
    for name, value in (("hidden_states", hidden_states), ("w1", w1), ("topk_ids", topk_ids)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if w1.dim() not in (3, 4) or hidden_states.dim() != 2:
        raise ValueError(
            f"hidden_states must be [M, K] and w1 [E_local, N, K] (or its K chunks), got "
            f"{tuple(hidden_states.shape)} and {tuple(w1.shape)}"
        )
    act = MoEActivation.parse(activation)
    num_local, n = experts_and_rows(w1)
    k = hidden_states.shape[1]
    config = FusedMoEConfig(
        num_experts=global_num_experts
        or (len(expert_map) if expert_map is not None else num_local),
        experts_per_token=max(1, topk_ids.shape[-1]),
        hidden_dim=k,
        intermediate_size=max(1, n // 2 if act.is_gated else n),
        in_dtype=hidden_states.dtype,
        activation=act,
        num_local_experts=num_local,
        has_bias=w1_bias is not None or w2_bias is not None,
    )
    quant = FusedMoEQuantConfig(w1_bias=w1_bias, w2_bias=w2_bias)
    chosen = resolve_backend(backend, hidden_states.device)
    experts = (TritonExperts if chosen == "triton" else TorchExperts)(config, quant)
    kernel = FusedMoEKernel(MoEPrepareAndFinalizeNoEP(), experts)
    return kernel(hidden_states, w1, w2, topk_weights, topk_ids, act,
                  -1 if global_num_experts is None else global_num_experts, expert_map,
                  apply_router_weight_on_input, check_ids=check_ids)  # fmt: skip
