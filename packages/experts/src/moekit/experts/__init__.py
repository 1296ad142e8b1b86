"""moekit.experts: the modular fused-MoE kernel and its implementations.

``fused_experts`` is the one-call entry point; ``FusedMoEKernel`` composes a prepare/finalize
(``MoEPrepareAndFinalizeNoEP``, ``BatchedPrepareAndFinalize``) with experts (``TritonExperts``,
``BatchedTritonExperts``, ``TorchExperts``, ``NaiveBatchedExperts``); ``chunk_weights`` stores
the expert weights in the K chunks the Triton experts read fastest; ``FusedMoE`` builds the
whole layer (``MoERunner``: router, expert weights, EPLB, shared experts, checkpoint loading).
"""

from moekit.experts.activation import MoEActivation, adjust_N_for_activation, apply_activation
from moekit.experts.config import FusedMoEConfig, FusedMoEParallelConfig, FusedMoEQuantConfig
from moekit.experts.functional import fused_experts
from moekit.experts.kernel import FusedMoEKernel
from moekit.experts.layer import (
    FusedMoE,
    MoERunner,
    SharedExpertsMLP,
    determine_expert_map,
    make_expert_params_mapping,
)
from moekit.experts.modular_kernel import (
    ExpertTokensMetadata,
    FusedMoEActivationFormat,
    FusedMoEExperts,
    FusedMoEExpertsModular,
    FusedMoEExpertsMonolithic,
    FusedMoEPrepareAndFinalize,
    FusedMoEPrepareAndFinalizeModular,
    FusedMoEPrepareAndFinalizeMonolithic,
)
from moekit.experts.prepare_finalize import BatchedPrepareAndFinalize, MoEPrepareAndFinalizeNoEP
from moekit.experts.topk_weight_and_reduce import (
    TopKWeightAndReduce,
    TopKWeightAndReduceContiguous,
    TopKWeightAndReduceDelegate,
    TopKWeightAndReduceNaiveBatched,
    TopKWeightAndReduceNoOP,
)
from moekit.experts.torch_experts import NaiveBatchedExperts, TorchExperts
from moekit.experts.triton_experts import BatchedTritonExperts, TritonExperts
from moekit.experts.weight_chunks import chunk_weights

__all__ = [
    "BatchedPrepareAndFinalize",
    "BatchedTritonExperts",
    "ExpertTokensMetadata",
    "FusedMoE",
    "FusedMoEActivationFormat",
    "FusedMoEConfig",
    "FusedMoEExperts",
    "FusedMoEExpertsModular",
    "FusedMoEExpertsMonolithic",
    "FusedMoEKernel",
    "FusedMoEParallelConfig",
    "FusedMoEPrepareAndFinalize",
    "FusedMoEPrepareAndFinalizeModular",
    "FusedMoEPrepareAndFinalizeMonolithic",
    "FusedMoEQuantConfig",
    "MoEActivation",
    "MoEPrepareAndFinalizeNoEP",
    "MoERunner",
    "NaiveBatchedExperts",
    "SharedExpertsMLP",
    "TopKWeightAndReduce",
    "TopKWeightAndReduceContiguous",
    "TopKWeightAndReduceDelegate",
    "TopKWeightAndReduceNaiveBatched",
    "TopKWeightAndReduceNoOP",
    "TorchExperts",
    "TritonExperts",
    "adjust_N_for_activation",
    "apply_activation",
    "chunk_weights",
    "determine_expert_map",
    "fused_experts",
    "make_expert_params_mapping",
]
__version__ = "0.1.0"
