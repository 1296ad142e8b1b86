"""The L2 eviction priority of the rows a call's GEMMs store for the next kernel to read.

GEMM1's activated rows ``[slots, I]`` are read by GEMM2, GEMM2's per-slot rows ``[slots, K]`` by
the top-k sum. Both are stored while the weights stream through L2, which evicts the early rows
before their reader starts. ``"evict_last"`` asks L2 to evict the weights first; the reader's
plain loads take the rows back to the normal priority. Slot rows larger than
``SLOT_ROWS_MAX_BYTES`` keep the default, as there they took the L2 room that GEMM2's
neighbouring m-tiles share their weight tiles through (lever 41 in
``benchmarks/experts/NOTES.md``). An empty string is the default policy. Kernels receive these
as compile-time arguments.
"""

from __future__ import annotations

ACTIVATED_ROWS_EVICTION = "evict_last"
SLOT_ROWS_EVICTION = "evict_last"
SLOT_ROWS_MAX_BYTES = 12 << 20


def slot_rows_eviction(num_bytes: int) -> str:
    """The policy of GEMM2's per-slot rows, ``num_bytes`` in all, that the top-k sum reads."""
    return SLOT_ROWS_EVICTION if num_bytes <= SLOT_ROWS_MAX_BYTES else ""
