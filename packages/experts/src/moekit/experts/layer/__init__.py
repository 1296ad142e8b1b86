"""The fused-MoE layer: :func:`FusedMoE` builds a :class:`MoERunner`."""

from moekit.experts.layer.checkpoint import (
    ExpertParam,
    expected_weights,
    load_checkpoint,
    load_weights,
    make_expert_params_mapping,
)
from moekit.experts.layer.expert_map import ExpertMapping, determine_expert_map
from moekit.experts.layer.factory import FusedMoE
from moekit.experts.layer.runner import MoERunner
from moekit.experts.layer.shared_experts import SharedExpertsMLP

__all__ = [
    "ExpertMapping",
    "ExpertParam",
    "FusedMoE",
    "MoERunner",
    "SharedExpertsMLP",
    "determine_expert_map",
    "expected_weights",
    "load_checkpoint",
    "load_weights",
    "make_expert_params_mapping",
]
