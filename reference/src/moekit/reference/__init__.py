"""Plain-NumPy reference of the moekit ops (the conformance oracle; no torch import).

The align ops live at the top level; the routing ones in :mod:`moekit.reference.routing`,
the fused-experts computation in :mod:`moekit.reference.experts`, the EPLB
policy, metrics and hook in :mod:`moekit.reference.eplb`.
"""

from moekit.reference import eplb, experts, routing
from moekit.reference.align import (
    batched_moe_align_block_size,
    count_expert_num_tokens,
    moe_align_block_size,
    moe_permute,
    moe_sum,
    moe_unpermute,
    sorted_ids_length,
)

__all__ = [
    "batched_moe_align_block_size",
    "count_expert_num_tokens",
    "eplb",
    "experts",
    "moe_align_block_size",
    "moe_permute",
    "moe_sum",
    "moe_unpermute",
    "routing",
    "sorted_ids_length",
]
__version__ = "0.1.0"
