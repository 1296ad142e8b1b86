"""The fused-experts face of the adapters (NumPy in, NumPy out), mixed into the adapter classes.

``fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, activation="silu",
expert_map=None, global_num_experts=None, apply_router_weight_on_input=False, w1_bias=None,
w2_bias=None, dtype="float32", activation_format="standard")`` returns ``[M, K]``. Floating
inputs come as float64; the implementation runs in ``dtype`` (the reference rounds to it).
``activation_format="batched"`` runs the batched pairing (capability ``experts_batched``).
"""

from __future__ import annotations

import numpy as np

from moekit.conformance.checks import round_to_dtype

EXPERTS = "experts"
EXPERTS_BATCHED = "experts_batched"
MODEL_SHAPES = "model_shapes"  # fast enough for the real models' K and I (a GPU)
EXPERTS_CAPABILITIES = frozenset({EXPERTS, EXPERTS_BATCHED, MODEL_SHAPES})
_FLOAT_ARGS = ("hidden_states", "w1", "w2", "w1_bias", "w2_bias")


class ReferenceExpertsMixin:
    def fused_experts(self, hidden_states, w1, w2, topk_weights, topk_ids, activation="silu",
                      expert_map=None, global_num_experts=None,
                      apply_router_weight_on_input=False, w1_bias=None, w2_bias=None,
                      dtype="float32", activation_format="standard"):  # fmt: skip
        from moekit.reference import experts

        def rounded(a):
            return None if a is None else round_to_dtype(a, dtype)

        return experts.fused_experts(
            rounded(hidden_states), rounded(w1), rounded(w2), topk_weights, topk_ids,
            activation, expert_map, global_num_experts, apply_router_weight_on_input,
            rounded(w1_bias), rounded(w2_bias),
        )  # fmt: skip


class MoekitExpertsMixin:
    backend: str
    device: str

    def fused_experts(self, hidden_states, w1, w2, topk_weights, topk_ids, activation="silu",
                      expert_map=None, global_num_experts=None,
                      apply_router_weight_on_input=False, w1_bias=None, w2_bias=None,
                      dtype="float32", activation_format="standard"):  # fmt: skip
        import torch

        import moekit.experts as ex

        def tensor(a, as_dtype=None):
            if a is None:
                return None
            t = torch.from_numpy(np.ascontiguousarray(a))
            return t.to(getattr(torch, as_dtype) if as_dtype else t.dtype).to(self.device)

        x, a, b = (tensor(v, dtype) for v in (hidden_states, w1, w2))
        b1, b2 = tensor(w1_bias, dtype), tensor(w2_bias, dtype)
        weights = tensor(np.asarray(topk_weights, np.float32))
        ids, emap = tensor(topk_ids), tensor(expert_map)
        if activation_format == "standard":
            out = ex.fused_experts(
                x, a, b, weights, ids, activation=activation, expert_map=emap,
                global_num_experts=global_num_experts,
                apply_router_weight_on_input=apply_router_weight_on_input, w1_bias=b1,
                w2_bias=b2, backend=self.backend,
            )  # fmt: skip
        else:
            num_local, n, k = a.shape
            config = ex.FusedMoEConfig(
                num_experts=global_num_experts or num_local, experts_per_token=ids.shape[1],
                hidden_dim=k, intermediate_size=b.shape[2], in_dtype=x.dtype,
                activation=activation, num_local_experts=num_local,
            )  # fmt: skip
            quant = ex.FusedMoEQuantConfig(w1_bias=b1, w2_bias=b2)
            max_tokens = max(1, x.shape[0])
            experts_cls = ex.BatchedTritonExperts if self._triton() else ex.NaiveBatchedExperts
            kernel = ex.FusedMoEKernel(
                ex.BatchedPrepareAndFinalize(max_tokens, num_local),
                experts_cls(config, quant, max_num_tokens=max_tokens, num_dispatchers=1),
            )
            out = kernel(x, a, b, weights, ids, activation,
                         -1 if global_num_experts is None else global_num_experts, emap,
                         apply_router_weight_on_input)  # fmt: skip
        return out.float().cpu().numpy()

    def _triton(self) -> bool:
        import torch

        from moekit.align import resolve_backend

        return resolve_backend(self.backend, torch.device(self.device)) == "triton"


def moekit_experts_available() -> bool:
    try:
        import moekit.experts  # noqa: F401
    except ImportError:
        return False
    return True
