"""Routing strategies of the simulator: synthetic expert choices for load and kernel studies.

A strategy ignores the logits' values (only their shape ``[T, E]`` and the hidden states' device
matter) and returns ``(topk_weights float32 [T, k], topk_ids [T, k])`` with distinct ids per token.
Every strategy draws from its own ``torch.Generator`` on the CPU (``seed=`` or ``generator=``), so
a seeded strategy gives the same ids on every device; results are then moved to the hidden
states' device.
"""

from __future__ import annotations

import abc
import os
from typing import Any, ClassVar

import numpy as np
import torch

from moekit.routing._checks import check_indices_type, check_int, check_logits


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if seed is not None:
            raise ValueError("give seed or generator, not both")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    made = torch.Generator()
    if seed is None:
        made.seed()
    else:
        made.manual_seed(check_int(seed, "seed", 0))
    return made


class RoutingStrategy(abc.ABC):
    """A way to choose experts for simulated traffic.

    Subclasses implement :meth:`_route` on CPU tensors; :meth:`route_tokens` checks the
    arguments, then moves the result to the hidden states' device and the index dtype.
    """

    def route_tokens(
        self,
        hidden_states: torch.Tensor,
        router_logits: torch.Tensor,
        top_k: int,
        indices_type: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(topk_weights float32 [T, top_k], topk_ids [T, top_k])``, ids distinct per token.

        Raises:
            TypeError / ValueError: logits not a 2-D float tensor, ``top_k`` outside
                ``[1, E]``, an ``indices_type`` other than int32/int64.
        """
        logits = check_logits(router_logits, "router_logits")
        num_tokens, num_experts = logits.shape
        top_k = check_int(top_k, "top_k", 1)
        if top_k > num_experts:
            raise ValueError(f"top_k={top_k} must be <= num_experts={num_experts}")
        index_dtype = check_indices_type(indices_type)
        device = hidden_states.device if isinstance(hidden_states, torch.Tensor) else logits.device
        weights, ids = self._route(num_tokens, num_experts, top_k)
        return weights.to(device=device, dtype=torch.float32), ids.to(device, index_dtype)

    @abc.abstractmethod
    def _route(
        self, num_tokens: int, num_experts: int, top_k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CPU ``(weights [T, k], int64 ids [T, k])``."""

    def get_distribution_info(self) -> dict[str, Any]:
        """A description of the strategy's configuration."""
        return {"strategy": type(self).__name__}


def _sample_distinct(generator: torch.Generator, num_tokens: int, top_k: int,
                     probabilities: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``[T, k]`` distinct experts per token, drawn one after another without replacement."""
    if num_tokens == 0:
        return torch.empty((0, top_k), dtype=torch.int64)
    rows = probabilities.to(torch.float64).expand(num_tokens, -1)
    return torch.multinomial(rows, top_k, replacement=False, generator=generator)


class DistributionBasedRouting(RoutingStrategy):
    """``uniform``: the top-k of ``rand(T, E)`` (weights 1.0); ``normal`` (``mean``, ``std``):
    ``clamp(floor(sigmoid(N(mean, std)) * E), 0, E-1)`` per slot, weights ``|N(mean, std)|``
    normalised to sum 1. Duplicate normal ids are redrawn (then, after 64 rounds, moved to the
    nearest free expert), so every token's ids are distinct."""

    _PARAMETERS: ClassVar[dict[str, dict[str, float]]] = {
        "uniform": {},
        "normal": {"mean": 0.0, "std": 1.0},
    }
    _REDRAW_ROUNDS = 64

    def __init__(self, distribution: str = "uniform", *, seed: int | None = None,
                 generator: torch.Generator | None = None, **params: float) -> None:  # fmt: skip
        if not isinstance(distribution, str) or distribution.lower() not in self._PARAMETERS:
            raise ValueError(
                f"distribution must be one of {sorted(self._PARAMETERS)} (any case), "
                f"got {distribution!r}"
            )
        self.distribution = distribution.lower()
        allowed = self._PARAMETERS[self.distribution]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown parameters {unknown} for the {self.distribution} distribution "
                f"(it takes {sorted(allowed) or 'none'})"
            )
        self.params = {**allowed, **{k: float(v) for k, v in params.items()}}
        if self.distribution == "normal" and not self.params["std"] > 0:
            raise ValueError(f"std must be > 0, got {self.params['std']}")
        self.generator = _make_generator(seed, generator)

    def get_distribution_info(self) -> dict[str, Any]:
        return {"distribution": self.distribution, **self.params}

    def _route(self, num_tokens, num_experts, top_k):
        if self.distribution == "uniform":
            ids = torch.rand(num_tokens, num_experts, generator=self.generator).topk(top_k).indices
            return torch.ones(num_tokens, top_k), ids
        ids = self._normal_ids(num_tokens, num_experts, top_k)
        magnitudes = self._normal((num_tokens, top_k)).abs()
        total = magnitudes.sum(dim=-1, keepdim=True)
        return magnitudes / torch.where(total == 0, torch.ones_like(total), total), ids

    def _normal(self, shape: tuple[int, int]) -> torch.Tensor:
        draw = torch.randn(shape, generator=self.generator, dtype=torch.float64)
        return draw * self.params["std"] + self.params["mean"]

    def _normal_ids(self, num_tokens: int, num_experts: int, top_k: int) -> torch.Tensor:
        def draw(shape):
            ids = torch.floor(torch.sigmoid(self._normal(shape)) * num_experts).long()
            return ids.clamp(0, num_experts - 1)

        ids = draw((num_tokens, top_k))
        earlier = torch.ones(top_k, top_k, dtype=torch.bool).tril(-1)  # [j, i]: i < j
        for _ in range(self._REDRAW_ROUNDS):
            repeated = ((ids[:, :, None] == ids[:, None, :]) & earlier).any(dim=-1)
            if not repeated.any():
                return ids
            ids = torch.where(repeated, draw(ids.shape), ids)
        return _move_repeats_to_nearest_free(ids, num_experts)


def _move_repeats_to_nearest_free(ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    ids = ids.clone()
    for row in ids:
        used: set[int] = set()
        for slot in range(row.numel()):
            expert = int(row[slot])
            distance = 0
            while True:
                for candidate in (expert - distance, expert + distance):
                    if 0 <= candidate < num_experts and candidate not in used:
                        break
                else:
                    distance += 1
                    continue
                break
            row[slot] = candidate
            used.add(candidate)
    return ids


class ZipfRouting(RoutingStrategy):
    """Skewed popularity: the expert of rank ``r`` is drawn with probability ``∝ r**-exponent``;
    ranks are a fixed random permutation of the experts (from the seed). Each token draws ``k``
    distinct experts one after another without replacement; weights ``1/k``."""

    def __init__(self, exponent: float = 1.1, *, seed: int | None = 0,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        if not float(exponent) >= 0:
            raise ValueError(f"exponent must be >= 0, got {exponent}")
        self.exponent = float(exponent)
        self.generator = _make_generator(seed, generator)
        self._rank_order: dict[int, torch.Tensor] = {}

    def expert_probabilities(self, num_experts: int) -> torch.Tensor:
        """float64 ``[E]``: the popularity of each expert for this many experts."""
        if num_experts not in self._rank_order:
            self._rank_order[num_experts] = torch.randperm(num_experts, generator=self.generator)
        ranks = torch.arange(1, num_experts + 1, dtype=torch.float64)
        by_rank = ranks.pow(-self.exponent)
        probabilities = torch.empty(num_experts, dtype=torch.float64)
        probabilities[self._rank_order[num_experts]] = by_rank / by_rank.sum()
        return probabilities

    def get_distribution_info(self) -> dict[str, Any]:
        return {"distribution": "zipf", "exponent": self.exponent}

    def _route(self, num_tokens, num_experts, top_k):
        probabilities = self.expert_probabilities(num_experts)
        ids = _sample_distinct(self.generator, num_tokens, top_k, probabilities)
        return torch.full((num_tokens, top_k), 1.0 / top_k), ids


class HotExpertsRouting(RoutingStrategy):
    """A chosen set of experts gets ``hot_share`` of the draws, split evenly; the others share
    the rest. ``hot_experts`` names them, or ``num_hot`` picks that many at random from the seed
    (default ``max(1, E // 16)``). Ids are distinct per token; weights ``1/k``."""

    def __init__(self, hot_experts: list[int] | None = None, *, num_hot: int | None = None,
                 hot_share: float = 0.5, seed: int | None = 0,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        if not 0.0 <= float(hot_share) <= 1.0:
            raise ValueError(f"hot_share must be in [0, 1], got {hot_share}")
        if hot_experts is not None and num_hot is not None:
            raise ValueError("give hot_experts or num_hot, not both")
        if hot_experts is not None and len(hot_experts) == 0:
            raise ValueError("hot_experts must name at least one expert")
        self.hot_experts = None if hot_experts is None else [int(e) for e in hot_experts]
        self.num_hot = None if num_hot is None else check_int(num_hot, "num_hot", 1)
        self.hot_share = float(hot_share)
        self.generator = _make_generator(seed, generator)
        self._chosen: dict[int, list[int]] = {}

    def hot_set(self, num_experts: int) -> list[int]:
        """The hot experts for this many experts."""
        if self.hot_experts is not None:
            bad = [e for e in self.hot_experts if not 0 <= e < num_experts]
            if bad:
                raise ValueError(f"hot_experts {bad} are outside [0, {num_experts})")
            return self.hot_experts
        if num_experts not in self._chosen:
            count = min(num_experts, self.num_hot or max(1, num_experts // 16))
            order = torch.randperm(num_experts, generator=self.generator)
            self._chosen[num_experts] = sorted(order[:count].tolist())
        return self._chosen[num_experts]

    def expert_probabilities(self, num_experts: int) -> torch.Tensor:
        hot = torch.zeros(num_experts, dtype=torch.bool)
        hot[self.hot_set(num_experts)] = True
        cold_count = int((~hot).sum())
        cold_share = 1.0 - self.hot_share if cold_count else 0.0
        hot_share = self.hot_share if cold_count else 1.0
        probabilities = torch.where(hot, hot_share / hot.sum(), cold_share / max(cold_count, 1))
        return probabilities.to(torch.float64)

    def get_distribution_info(self) -> dict[str, Any]:
        return {"distribution": "hot_experts", "hot_experts": self.hot_experts,
                "num_hot": self.num_hot, "hot_share": self.hot_share}  # fmt: skip

    def _route(self, num_tokens, num_experts, top_k):
        probabilities = self.expert_probabilities(num_experts)
        if int((probabilities > 0).sum()) < top_k:  # e.g. hot_share=1 with fewer hot than k
            probabilities = probabilities + 1e-12
        ids = _sample_distinct(self.generator, num_tokens, top_k, probabilities)
        return torch.full((num_tokens, top_k), 1.0 / top_k), ids


class ReplayRouting(RoutingStrategy):
    """Plays back recorded ids ``[N, k]`` (an array, a tensor or the path of a ``.npy``) in
    order, ``T`` rows per call, wrapping around at the end; optional recorded weights ``[N, k]``
    (default ``1/k``). ``top_k`` must equal the trace's ``k``."""

    def __init__(self, trace: np.ndarray | torch.Tensor | str | os.PathLike[str],
                 weights: np.ndarray | torch.Tensor | None = None) -> None:  # fmt: skip
        if isinstance(trace, str | os.PathLike):
            trace = np.load(trace)
        ids = torch.as_tensor(np.asarray(trace))
        if ids.dim() != 2 or ids.shape[0] == 0 or ids.dtype.is_floating_point:
            raise ValueError(
                f"trace must be a non-empty 2-D integer array [N, k], got {ids.dtype} "
                f"{tuple(ids.shape)}"
            )
        if int(ids.min()) < 0:
            raise ValueError("trace holds negative expert ids")
        if any(len(set(row)) != len(row) for row in ids.tolist()):
            raise ValueError("trace repeats an expert within a token")
        self.trace = ids.long()
        if weights is None:
            self.weights = torch.full(ids.shape, 1.0 / ids.shape[1])
        else:
            self.weights = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
            if self.weights.shape != ids.shape:
                raise ValueError(
                    f"weights must have the trace's shape {tuple(ids.shape)}, "
                    f"got {tuple(self.weights.shape)}"
                )
        self.position = 0

    def reset(self) -> None:
        """Start again from the first recorded row."""
        self.position = 0

    def get_distribution_info(self) -> dict[str, Any]:
        return {"distribution": "replay", "rows": self.trace.shape[0],
                "top_k": self.trace.shape[1], "position": self.position}  # fmt: skip

    def _route(self, num_tokens, num_experts, top_k):
        if top_k != self.trace.shape[1]:
            raise ValueError(f"top_k={top_k} but the trace records k={self.trace.shape[1]}")
        if int(self.trace.max()) >= num_experts:
            raise ValueError(
                f"the trace holds expert {int(self.trace.max())} but the logits have "
                f"{num_experts} experts"
            )
        rows = (self.position + torch.arange(num_tokens)) % self.trace.shape[0]
        self.position = (self.position + num_tokens) % self.trace.shape[0]
        return self.weights[rows], self.trace[rows]
