"""The L2 eviction priority of the rows a call's GEMMs store for the next kernel to read.

GEMM1's activated rows ``[slots, I]`` are read by GEMM2, GEMM2's per-slot rows ``[slots, K]`` by
the top-k sum. Both are stored while the weights stream through L2. ``"evict_last"`` asks L2 to
evict other lines first; the reader's plain loads take the rows back to the normal priority. An
empty string is the default policy. Kernels receive these as compile-time arguments.

Measured in whole calls on the H100 (lever 41 in ``benchmarks/experts/NOTES.md``): the activated
rows gained or tied on every shape. The slot rows gained on the top-8 shapes while an average
expert fills less than one of GEMM2's m-tiles, and lost where they were large (over
``SLOT_ROWS_MAX_BYTES``) or where neighbouring m-tiles share each expert's weight tiles
(Mixtral), so they take the policy only short of both. A table entry with
``ROWS_DEFAULT_POLICY`` keeps the default for both (Mixtral's at 64 and 256 tokens on the H100,
0.4-0.5% faster so).
"""

from __future__ import annotations

ACTIVATED_ROWS_EVICTION = "evict_last"
SLOT_ROWS_EVICTION = "evict_last"
SLOT_ROWS_MAX_BYTES = 12 << 20
SLOT_ROWS_MAX_TILE_FILL = 1.0  # slots per local expert over GEMM2's BLOCK_M, exclusive


def activated_rows_eviction(default_policy: bool) -> str:
    """The policy of GEMM1's activated rows, which GEMM2 reads (``default_policy``: the entry's
    ``ROWS_DEFAULT_POLICY``)."""
    return "" if default_policy else ACTIVATED_ROWS_EVICTION


def slot_rows_eviction(num_bytes: int, num_slots: int, num_local_experts: int, block_m: int,
                       default_policy: bool) -> str:  # fmt: skip
    """The policy of GEMM2's per-slot rows (``num_bytes`` in all), which the top-k sum reads,
    for ``num_slots`` slots over ``num_local_experts`` experts in m-tiles of ``block_m`` rows
    (``default_policy``: the entry's ``ROWS_DEFAULT_POLICY``)."""
    if default_policy:
        return ""
    fits = num_bytes <= SLOT_ROWS_MAX_BYTES
    unshared = num_slots < SLOT_ROWS_MAX_TILE_FILL * block_m * num_local_experts
    return SLOT_ROWS_EVICTION if fits and unshared else ""
