"""The routing face of the adapters (NumPy in, NumPy out), mixed into the adapter classes.

Routing methods take logits as float64 NumPy plus the ``dtype`` the implementation should see
them in (``float32``, ``float16``, ``bfloat16``), and return ``(topk_weights float, topk_ids
int)``. ``simulate_routing(strategy, num_tokens, num_experts, top_k, seed, **params)`` returns the
ids a seeded strategy draws: ``uniform``, ``normal`` (``mean``, ``std``), ``zipf``
(``exponent``; the *first* id of each token is drawn with probability ``∝ rank**-exponent``) and
``hot_experts`` (``hot_experts``, ``hot_share``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moekit.conformance.checks import round_to_dtype

ROUTING = "routing"
SORTED_TOPK = "sorted_topk"  # slots in descending score, ties to the lower index
ROUTING_SIMULATOR = "routing_simulator"
ROUTING_CAPABILITIES = frozenset({ROUTING, SORTED_TOPK, ROUTING_SIMULATOR})


class ReferenceRoutingMixin:
    """Routing through :mod:`moekit.reference.routing`; the simulator through NumPy samplers."""

    def fused_topk(self, logits, topk, renormalize, scoring_func="softmax", dtype="float32",
                   indices_type="int32"):  # fmt: skip
        from moekit.reference import routing

        return _typed(
            routing.fused_topk(round_to_dtype(logits, dtype), topk, renormalize, scoring_func),
            indices_type,
        )

    def fused_topk_bias(self, logits, bias, topk, renormalize, scoring_func="softmax",
                        routed_scaling_factor=1.0, dtype="float32", indices_type="int32"):  # fmt: skip
        from moekit.reference import routing

        return _typed(routing.fused_topk_bias(
            round_to_dtype(logits, dtype), np.asarray(bias, np.float32), topk, renormalize,
            scoring_func, routed_scaling_factor,
        ), indices_type)  # fmt: skip

    def grouped_topk(self, logits, topk, renormalize, num_expert_group, topk_group,
                     scoring_func="softmax", routed_scaling_factor=1.0, bias=None,
                     dtype="float32", indices_type="int32"):  # fmt: skip
        from moekit.reference import routing

        return _typed(routing.grouped_topk(
            round_to_dtype(logits, dtype), topk, renormalize, num_expert_group, topk_group,
            scoring_func, routed_scaling_factor,
            None if bias is None else np.asarray(bias, np.float32),
        ), indices_type)  # fmt: skip

    def simulate_routing(self, strategy: str, num_tokens: int, num_experts: int, top_k: int,
                         seed: int, **params: Any) -> np.ndarray:  # fmt: skip
        from moekit.reference import routing

        rng = np.random.default_rng(seed)
        if strategy == "uniform":
            probabilities = np.full(num_experts, 1.0 / num_experts)
        elif strategy == "zipf":
            probabilities = routing.zipf_expert_probabilities(
                num_experts, params.get("exponent", 1.1), rng.permutation(num_experts)
            )
        elif strategy == "hot_experts":
            probabilities = routing.hot_expert_probabilities(
                num_experts, params["hot_experts"], params.get("hot_share", 0.5)
            )
        elif strategy == "normal":
            return _normal_ids(rng, num_tokens, num_experts, top_k, **params)
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
        return routing.sample_distinct(rng, num_tokens, top_k, probabilities)


def _typed(outputs, indices_type):
    weights, ids = outputs
    return weights.astype(np.float32), ids.astype(indices_type)


def _normal_ids(rng, num_tokens, num_experts, top_k, mean=0.0, std=1.0):
    """The spec's normal ids, a duplicate redrawn until the token's ids are distinct."""
    ids = np.empty((num_tokens, top_k), dtype=np.int32)
    for t in range(num_tokens):
        row: list[int] = []
        while len(row) < top_k:
            z = rng.normal(mean, std)
            expert = int(np.clip(np.floor(num_experts / (1.0 + np.exp(-z))), 0, num_experts - 1))
            if expert not in row:
                row.append(expert)
        ids[t] = row
    return ids


class MoekitRoutingMixin:
    """Routing through :mod:`moekit.routing` on the adapter's backend and device."""

    backend: str
    device: str

    def _routing(self):
        import moekit.routing

        return moekit.routing

    def _logits(self, logits, dtype):
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        return tensor.to(getattr(torch, dtype)).to(self.device)

    def _bias(self, bias):
        import torch

        if bias is None:
            return None
        return torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)).to(self.device)

    def _index_dtype(self, indices_type):
        import torch

        return getattr(torch, indices_type) if isinstance(indices_type, str) else indices_type

    @staticmethod
    def _pair(outputs):
        weights, ids = outputs
        return weights.cpu().numpy(), ids.cpu().numpy()

    def fused_topk(self, logits, topk, renormalize, scoring_func="softmax", dtype="float32",
                   indices_type="int32"):  # fmt: skip
        return self._pair(self._routing().fused_topk(
            None, self._logits(logits, dtype), topk, renormalize, scoring_func=scoring_func,
            indices_type=self._index_dtype(indices_type), backend=self.backend,
        ))  # fmt: skip

    def fused_topk_bias(self, logits, bias, topk, renormalize, scoring_func="softmax",
                        routed_scaling_factor=1.0, dtype="float32", indices_type="int32"):  # fmt: skip
        return self._pair(self._routing().fused_topk_bias(
            None, self._logits(logits, dtype), self._bias(bias), topk, renormalize,
            scoring_func=scoring_func, routed_scaling_factor=routed_scaling_factor,
            indices_type=self._index_dtype(indices_type), backend=self.backend,
        ))  # fmt: skip

    def grouped_topk(self, logits, topk, renormalize, num_expert_group, topk_group,
                     scoring_func="softmax", routed_scaling_factor=1.0, bias=None,
                     dtype="float32", indices_type="int32"):  # fmt: skip
        return self._pair(self._routing().grouped_topk(
            None, self._logits(logits, dtype), topk, renormalize, num_expert_group, topk_group,
            scoring_func, routed_scaling_factor, self._bias(bias),
            indices_type=self._index_dtype(indices_type), backend=self.backend,
        ))  # fmt: skip

    def simulate_routing(self, strategy, num_tokens, num_experts, top_k, seed, **params):
        import torch

        routing = self._routing()
        if strategy in ("uniform", "normal"):
            made = routing.DistributionBasedRouting(strategy, seed=seed, **params)
        elif strategy == "zipf":
            made = routing.ZipfRouting(params.get("exponent", 1.1), seed=seed)
        elif strategy == "hot_experts":
            made = routing.HotExpertsRouting(params["hot_experts"],
                                             hot_share=params.get("hot_share", 0.5), seed=seed)  # fmt: skip
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
        logits = torch.zeros(num_tokens, num_experts, device=self.device)
        return made.route_tokens(logits, logits, top_k)[1].cpu().numpy()


def moekit_routing_available() -> bool:
    try:
        import moekit.routing  # noqa: F401
    except ImportError:
        return False
    return True
