"""The L2 eviction priority of the rows a call's GEMMs store for the next kernel to read.

GEMM1's activated rows ``[slots, I]`` are read by GEMM2, GEMM2's per-slot rows ``[slots, K]`` by
the top-k sum. Both are stored while the weights stream through L2, which evicts the early rows
before their reader starts; ``"evict_last"`` asks L2 to evict the weights first. An empty string
keeps the default policy. Kernels receive these as compile-time arguments, so a change takes a
new compilation, not a stale one.
"""

from __future__ import annotations

ACTIVATED_ROWS_EVICTION = ""
SLOT_ROWS_EVICTION = ""
