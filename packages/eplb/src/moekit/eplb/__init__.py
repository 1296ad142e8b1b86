"""moekit.eplb: expert-parallel load balancing.

Policies that place replicas of the logical experts on ranks (:class:`DefaultEplbPolicy`, the
hierarchical greedy; :class:`IlpEplbPolicy`, mixed-integer programming on HiGHS), balance
metrics, the runtime :class:`EplbState` and the routing hook :func:`map_to_physical_and_record`.
"""

from moekit.eplb.default_policy import (
    DefaultEplbPolicy,
    balanced_packing,
    preserve_slots,
    rebalance_experts_hierarchical,
    replicate_experts,
)
from moekit.eplb.hook import map_to_physical_and_record
from moekit.eplb.ilp_policy import IlpEplbPolicy, IlpPlan, LayerReport
from moekit.eplb.metrics import (
    aggregate_balancedness,
    balancedness,
    imbalance,
    rank_load,
    replica_moves,
)
from moekit.eplb.policy import AbstractEplbPolicy, compute_logical_maps
from moekit.eplb.state import (
    EplbState,
    ExpertMove,
    Rearrangement,
    initial_physical_to_logical,
    weight_moves,
)

__all__ = [
    "AbstractEplbPolicy",
    "DefaultEplbPolicy",
    "EplbState",
    "ExpertMove",
    "IlpEplbPolicy",
    "IlpPlan",
    "LayerReport",
    "Rearrangement",
    "aggregate_balancedness",
    "balanced_packing",
    "balancedness",
    "compute_logical_maps",
    "imbalance",
    "initial_physical_to_logical",
    "map_to_physical_and_record",
    "preserve_slots",
    "rank_load",
    "rebalance_experts_hierarchical",
    "replica_moves",
    "replicate_experts",
    "weight_moves",
]
__version__ = "0.1.0"
