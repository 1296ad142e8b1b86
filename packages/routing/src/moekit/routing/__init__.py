"""moekit.routing: top-k routing, routers and the routing simulator.

Every routing function has a fused Triton kernel and a plain-torch path behind ``backend=``
(``"auto"`` picks Triton for GPU tensors; ``MOEKIT_BACKEND`` overrides ``"auto"``).
"""

from moekit.routing._backend import Backend
from moekit.routing.routers import (
    CustomRoutingRouter,
    GroupedTopKRouter,
    Router,
    RoutingMethodType,
    RoutingSimulatorRouter,
    TopKBiasRouter,
    TopKRouter,
    create_router,
    routing_method_type_for,
)
from moekit.routing.simulator import SIMULATION_STRATEGY_ENV_VAR, RoutingSimulator
from moekit.routing.strategies import (
    DistributionBasedRouting,
    HotExpertsRouting,
    ReplayRouting,
    RoutingStrategy,
    ZipfRouting,
)
from moekit.routing.topk import fused_topk, fused_topk_bias, grouped_topk

__all__ = [
    "SIMULATION_STRATEGY_ENV_VAR",
    "Backend",
    "CustomRoutingRouter",
    "DistributionBasedRouting",
    "GroupedTopKRouter",
    "HotExpertsRouting",
    "ReplayRouting",
    "Router",
    "RoutingMethodType",
    "RoutingSimulator",
    "RoutingSimulatorRouter",
    "RoutingStrategy",
    "TopKBiasRouter",
    "TopKRouter",
    "ZipfRouting",
    "create_router",
    "fused_topk",
    "fused_topk_bias",
    "grouped_topk",
    "routing_method_type_for",
]
__version__ = "0.1.0"
