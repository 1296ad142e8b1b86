"""The routing simulator: a class-level registry of named routing strategies.

Built in (each seeded with 0, so runs repeat): ``uniform_random``, ``normal_routing``, ``zipf``
(exponent 1.1) and ``hot_experts`` (``E // 16`` experts take half the traffic). Setting
``MOEKIT_ROUTING_SIMULATION_STRATEGY=<name>`` makes :func:`moekit.routing.create_router` route
with that strategy instead of the model's router.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from moekit.routing.strategies import (
    DistributionBasedRouting,
    HotExpertsRouting,
    RoutingStrategy,
    ZipfRouting,
)

SIMULATION_STRATEGY_ENV_VAR = "MOEKIT_ROUTING_SIMULATION_STRATEGY"


class RoutingSimulator:
    """Registry and entry point of the simulated routing strategies."""

    _strategies: ClassVar[dict[str, RoutingStrategy]] = {
        "uniform_random": DistributionBasedRouting("uniform", seed=0),
        "normal_routing": DistributionBasedRouting("normal", seed=0),
        "zipf": ZipfRouting(1.1, seed=0),
        "hot_experts": HotExpertsRouting(hot_share=0.5, seed=0),
    }

    @classmethod
    def register_strategy(cls, name: str, strategy: RoutingStrategy) -> None:
        """Add (or replace) the strategy called ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if not isinstance(strategy, RoutingStrategy):
            raise TypeError(f"strategy must be a RoutingStrategy, got {type(strategy).__name__}")
        cls._strategies[name] = strategy

    @classmethod
    def get_available_strategies(cls) -> list[str]:
        """The registered names, sorted."""
        return sorted(cls._strategies)

    @classmethod
    def get_strategy(cls, name: str) -> RoutingStrategy:
        """The strategy called ``name``; ``ValueError`` listing the names if there is none."""
        if name not in cls._strategies:
            raise ValueError(
                f"unknown routing strategy {name!r}; available: {cls.get_available_strategies()}"
            )
        return cls._strategies[name]

    @classmethod
    def simulate_routing(
        cls,
        hidden_states: torch.Tensor,
        router_logits: torch.Tensor,
        strategy_name: str,
        top_k: int,
        indices_type: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Route ``[T, E]`` logits with the named strategy: ``(float32 [T, k], ids [T, k])``."""
        return cls.get_strategy(strategy_name).route_tokens(
            hidden_states, router_logits, top_k, indices_type
        )
