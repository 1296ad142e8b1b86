"""Routers: objects that turn router logits into ``(topk_weights, topk_ids)``, and the factory
that picks one from a model's MoE configuration."""

from __future__ import annotations

import abc
import enum
import os
from collections.abc import Callable

import torch

from moekit.routing._backend import Backend
from moekit.routing._checks import (
    check_groups,
    check_indices_type,
    check_int,
    check_scale,
    check_scoring_func,
)
from moekit.routing.simulator import SIMULATION_STRATEGY_ENV_VAR, RoutingSimulator
from moekit.routing.strategies import RoutingStrategy
from moekit.routing.topk import fused_topk, fused_topk_bias, grouped_topk


class RoutingMethodType(enum.IntEnum):
    """vLLM's numbering, so values interoperate with engines that store them."""

    Default = 0
    Renormalize = 1
    DeepSeekV3 = 2
    Llama4 = 3
    RenormalizeNaive = 4
    TopK = 5
    SigmoidRenorm = 6
    MiniMax2 = 7
    Sigmoid = 8
    Unspecified = 9
    Custom = 101
    Simulated = 102


def routing_method_type_for(scoring_func: str, renormalize: bool, has_bias: bool,
                            grouped: bool) -> RoutingMethodType:  # fmt: skip
    """The method type of a configuration (spec: Routers and the factory)."""
    if has_bias:
        if scoring_func == "sigmoid" and renormalize:
            return RoutingMethodType.DeepSeekV3 if grouped else RoutingMethodType.MiniMax2
        return RoutingMethodType.Unspecified
    if scoring_func == "sigmoid":
        return RoutingMethodType.SigmoidRenorm if renormalize else RoutingMethodType.Sigmoid
    return RoutingMethodType.RenormalizeNaive if renormalize else RoutingMethodType.Default


def _check_bias_config(bias: object, num_experts: int) -> torch.Tensor | None:
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
        raise TypeError("e_score_correction_bias must be a floating torch.Tensor")
    if bias.dim() != 1 or bias.shape[0] != num_experts:
        raise ValueError(
            f"e_score_correction_bias must have shape [num_experts={num_experts}], "
            f"got {tuple(bias.shape)}"
        )
    return bias


class Router(abc.ABC):
    """Chooses ``top_k`` experts per token: ``select_experts(hidden_states, router_logits)``
    returns ``(topk_weights float32 [T, top_k], topk_ids [T, top_k])``."""

    routing_method_type: RoutingMethodType

    def __init__(self, top_k: int, num_experts: int, indices_type: torch.dtype | None) -> None:
        self.top_k = check_int(top_k, "top_k", 1)
        self.num_experts = check_int(num_experts, "num_experts", 1)
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={top_k} must be <= num_experts={num_experts}")
        self.indices_type = check_indices_type(indices_type)

    def _check_logits(self, router_logits: torch.Tensor) -> None:
        if (
            isinstance(router_logits, torch.Tensor)
            and router_logits.dim() == 2
            and router_logits.shape[1] != self.num_experts
        ):
            raise ValueError(
                f"router_logits must have num_experts={self.num_experts} columns, "
                f"got shape {tuple(router_logits.shape)}"
            )

    @abc.abstractmethod
    def select_experts(self, hidden_states: torch.Tensor | None,
                       router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """``(topk_weights float32 [T, top_k], topk_ids [T, top_k])`` for logits ``[T, E]``."""


class TopKRouter(Router):
    """Plain top-k of softmax or sigmoid scores (:func:`fused_topk`), then the weights times
    ``routed_scaling_factor``."""

    def __init__(self, top_k: int, num_experts: int, *, renormalize: bool = True,
                 scoring_func: str = "softmax", routed_scaling_factor: float = 1.0,
                 indices_type: torch.dtype | None = None, backend: Backend = "auto") -> None:  # fmt: skip
        super().__init__(top_k, num_experts, indices_type)
        self.renormalize = renormalize
        self.scoring_func = check_scoring_func(scoring_func)
        self.routed_scaling_factor = check_scale(routed_scaling_factor)
        self.backend = backend
        self.routing_method_type = routing_method_type_for(scoring_func, renormalize, False, False)

    def select_experts(self, hidden_states, router_logits):
        self._check_logits(router_logits)
        weights, ids = fused_topk(
            hidden_states, router_logits, self.top_k, self.renormalize,
            scoring_func=self.scoring_func, indices_type=self.indices_type, backend=self.backend,
        )  # fmt: skip
        if self.routed_scaling_factor != 1.0:
            weights = weights * self.routed_scaling_factor
        return weights, ids


class TopKBiasRouter(Router):
    """Top-k selected by ``score + e_score_correction_bias`` (:func:`fused_topk_bias`)."""

    def __init__(self, top_k: int, num_experts: int, e_score_correction_bias: torch.Tensor, *,
                 renormalize: bool = True, scoring_func: str = "sigmoid",
                 routed_scaling_factor: float = 1.0, indices_type: torch.dtype | None = None,
                 backend: Backend = "auto") -> None:  # fmt: skip
        super().__init__(top_k, num_experts, indices_type)
        if e_score_correction_bias is None:
            raise TypeError("e_score_correction_bias must be a torch.Tensor, got None")
        self.e_score_correction_bias = _check_bias_config(e_score_correction_bias, num_experts)
        self.renormalize = renormalize
        self.scoring_func = check_scoring_func(scoring_func)
        self.routed_scaling_factor = check_scale(routed_scaling_factor)
        self.backend = backend
        self.routing_method_type = routing_method_type_for(scoring_func, renormalize, True, False)

    def select_experts(self, hidden_states, router_logits):
        self._check_logits(router_logits)
        return fused_topk_bias(
            hidden_states, router_logits, self.e_score_correction_bias, self.top_k,
            self.renormalize, scoring_func=self.scoring_func,
            routed_scaling_factor=self.routed_scaling_factor, indices_type=self.indices_type,
            backend=self.backend,
        )  # fmt: skip


class GroupedTopKRouter(Router):
    """DeepSeek-V2/V3 grouped top-k (:func:`grouped_topk`)."""

    def __init__(self, top_k: int, num_experts: int, num_expert_group: int, topk_group: int, *,
                 renormalize: bool = True, scoring_func: str = "softmax",
                 e_score_correction_bias: torch.Tensor | None = None,
                 routed_scaling_factor: float = 1.0, indices_type: torch.dtype | None = None,
                 backend: Backend = "auto") -> None:  # fmt: skip
        super().__init__(top_k, num_experts, indices_type)
        self.e_score_correction_bias = _check_bias_config(e_score_correction_bias, num_experts)
        self.num_expert_group, self.topk_group = check_groups(
            num_experts, self.top_k, num_expert_group, topk_group,
            self.e_score_correction_bias is not None,
        )  # fmt: skip
        self.renormalize = renormalize
        self.scoring_func = check_scoring_func(scoring_func)
        self.routed_scaling_factor = check_scale(routed_scaling_factor)
        self.backend = backend
        self.routing_method_type = routing_method_type_for(
            scoring_func, renormalize, self.e_score_correction_bias is not None, True
        )

    def select_experts(self, hidden_states, router_logits):
        self._check_logits(router_logits)
        return grouped_topk(
            hidden_states, router_logits, self.top_k, self.renormalize, self.num_expert_group,
            self.topk_group, self.scoring_func, self.routed_scaling_factor,
            self.e_score_correction_bias, indices_type=self.indices_type, backend=self.backend,
        )  # fmt: skip


class CustomRoutingRouter(Router):
    """Wraps ``fn(hidden_states=, gating_output=, topk=, renormalize=) -> (weights, ids)``;
    its outputs are checked for shape and cast to float32 and the index dtype."""

    routing_method_type = RoutingMethodType.Custom

    def __init__(self, custom_routing_function: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                 top_k: int, num_experts: int, *, renormalize: bool = True,
                 indices_type: torch.dtype | None = None) -> None:  # fmt: skip
        super().__init__(top_k, num_experts, indices_type)
        if not callable(custom_routing_function):
            raise TypeError("custom_routing_function must be callable")
        self.custom_routing_function = custom_routing_function
        self.renormalize = renormalize

    def select_experts(self, hidden_states, router_logits):
        self._check_logits(router_logits)
        weights, ids = self.custom_routing_function(
            hidden_states=hidden_states, gating_output=router_logits, topk=self.top_k,
            renormalize=self.renormalize,
        )  # fmt: skip
        expected = (router_logits.shape[0], self.top_k)
        for name, value in (("weights", weights), ("ids", ids)):
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ValueError(
                    f"custom_routing_function returned {name} of shape {shape}, expected {expected}"
                )
        return weights.to(torch.float32), ids.to(self.indices_type)


class RoutingSimulatorRouter(Router):
    """Routes with a simulator strategy (a registered name or a :class:`RoutingStrategy`).

    ``routing_method_type`` is ``Simulated``; ``wrapped_routing_method_type`` keeps the method
    type of the router it stands in for (``Unspecified`` if none)."""

    routing_method_type = RoutingMethodType.Simulated

    def __init__(self, strategy: str | RoutingStrategy, top_k: int, num_experts: int, *,
                 wrapped: Router | None = None, indices_type: torch.dtype | None = None) -> None:  # fmt: skip
        super().__init__(top_k, num_experts, indices_type)
        if isinstance(strategy, str):
            self.strategy_name = strategy
            self.strategy = RoutingSimulator.get_strategy(strategy)
        elif isinstance(strategy, RoutingStrategy):
            self.strategy_name = type(strategy).__name__
            self.strategy = strategy
        else:
            raise TypeError(
                f"strategy must be a name or a RoutingStrategy, got {type(strategy).__name__}"
            )
        self.wrapped = wrapped
        self.wrapped_routing_method_type = (
            wrapped.routing_method_type if wrapped is not None else RoutingMethodType.Unspecified
        )

    def select_experts(self, hidden_states, router_logits):
        self._check_logits(router_logits)
        return self.strategy.route_tokens(
            hidden_states, router_logits, self.top_k, self.indices_type
        )


def create_router(
    top_k: int,
    num_experts: int,
    *,
    renormalize: bool = True,
    scoring_func: str = "softmax",
    use_grouped_topk: bool = False,
    num_expert_group: int | None = None,
    topk_group: int | None = None,
    e_score_correction_bias: torch.Tensor | None = None,
    routed_scaling_factor: float = 1.0,
    custom_routing_function: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    indices_type: torch.dtype | None = None,
    backend: Backend = "auto",
) -> Router:
    """The router of a model's MoE configuration.

    Chosen in this order: a ``custom_routing_function``; grouped top-k when
    ``use_grouped_topk`` (unless degenerate: at most one group and ``topk_group <= 1``);
    top-k with bias when ``e_score_correction_bias`` is given; plain top-k. With
    ``MOEKIT_ROUTING_SIMULATION_STRATEGY=<name>`` set, the result is a
    :class:`RoutingSimulatorRouter` routing with that strategy and keeping the chosen router's
    method type. Configuration errors raise here, not at the first call.
    """
    router: Router
    if custom_routing_function is not None:
        router = CustomRoutingRouter(custom_routing_function, top_k, num_experts,
                                     renormalize=renormalize, indices_type=indices_type)  # fmt: skip
    elif use_grouped_topk and not ((num_expert_group or 1) <= 1 and (topk_group or 1) <= 1):
        router = GroupedTopKRouter(
            top_k, num_experts, num_expert_group or 1, topk_group or 1, renormalize=renormalize,
            scoring_func=scoring_func, e_score_correction_bias=e_score_correction_bias,
            routed_scaling_factor=routed_scaling_factor, indices_type=indices_type,
            backend=backend,
        )  # fmt: skip
    elif e_score_correction_bias is not None:
        router = TopKBiasRouter(
            top_k, num_experts, e_score_correction_bias, renormalize=renormalize,
            scoring_func=scoring_func, routed_scaling_factor=routed_scaling_factor,
            indices_type=indices_type, backend=backend,
        )  # fmt: skip
    else:
        router = TopKRouter(
            top_k, num_experts, renormalize=renormalize, scoring_func=scoring_func,
            routed_scaling_factor=routed_scaling_factor, indices_type=indices_type,
            backend=backend,
        )  # fmt: skip
    strategy = os.environ.get(SIMULATION_STRATEGY_ENV_VAR, "")
    if strategy:
        return RoutingSimulatorRouter(
            strategy, top_k, num_experts, wrapped=router, indices_type=indices_type
        )
    return router
