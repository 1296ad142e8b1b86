"""moekit.align: sort routed tokens by expert for grouped GEMMs, and the ops around it.

Every op has a Triton kernel and a plain-torch path behind ``backend=`` (``"auto"`` picks
Triton for GPU tensors; ``MOEKIT_BACKEND`` overrides ``"auto"``).
"""

from moekit.align._backend import (
    Backend,
    interpreter_enabled,
    programmatic_launch_supported,
    resolve_backend,
)
from moekit.align.block_align import batched_moe_align_block_size, moe_align_block_size
from moekit.align.expert_map import validate_expert_map
from moekit.align.permute import moe_permute, moe_unpermute
from moekit.align.reduce import count_expert_num_tokens, moe_sum

__all__ = [
    "Backend",
    "batched_moe_align_block_size",
    "count_expert_num_tokens",
    "interpreter_enabled",
    "moe_align_block_size",
    "moe_permute",
    "moe_sum",
    "moe_unpermute",
    "programmatic_launch_supported",
    "resolve_backend",
    "validate_expert_map",
]
__version__ = "0.1.0"
