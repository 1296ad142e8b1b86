"""The L2 eviction priority of the rows a call's GEMMs store for the next kernel to read.

GEMM1's activated rows ``[slots, I]`` are read by GEMM2, GEMM2's per-slot rows ``[slots, K]`` by
the top-k sum. Both are stored while the weights stream through L2. ``"evict_last"`` asks L2 to
evict other lines first; an empty string is the default policy. Kernels receive these as
compile-time arguments. ``benchmarks/experts/probe_row_eviction.py`` found such rows kept in
part behind a stream of 256 MiB to 1 GiB, and no trace of them once read and followed by four
streams: the policy does not outlive the call.

Measured in whole calls on the H100 and the H200 (lever 41 in ``benchmarks/experts/NOTES.md``):
the activated rows gained up to 2.4% on the top-8 shapes and tied or gained elsewhere but on
Mixtral at 64 and 256 tokens. The slot rows gained up to 3.2% on the top-8 shapes, and lost where
they were large (over ``SLOT_ROWS_MAX_BYTES``) or the experts few (under
``SLOT_ROWS_MIN_EXPERTS``: Mixtral's 8 lost 0.1-1% at 64 and 256 tokens), so they take the policy
only short of both. A table entry with ``ROWS_DEFAULT_POLICY`` keeps the default for both
(Mixtral's at 64 and 256 tokens, 0.4-1% faster so).
"""

from __future__ import annotations

ACTIVATED_ROWS_EVICTION = "evict_last"
SLOT_ROWS_EVICTION = "evict_last"
SLOT_ROWS_MAX_BYTES = 12 << 20
SLOT_ROWS_MIN_EXPERTS = 32


def activated_rows_eviction(default_policy: bool) -> str:
    """The policy of GEMM1's activated rows, which GEMM2 reads (``default_policy``: the entry's
    ``ROWS_DEFAULT_POLICY``)."""
    return "" if default_policy else ACTIVATED_ROWS_EVICTION


def slot_rows_eviction(num_bytes: int, num_local_experts: int, default_policy: bool) -> str:
    """The policy of GEMM2's per-slot rows (``num_bytes`` in all), which the top-k sum reads, in
    a call over ``num_local_experts`` experts (``default_policy``: the entry's
    ``ROWS_DEFAULT_POLICY``)."""
    if default_policy or num_local_experts < SLOT_ROWS_MIN_EXPERTS:
        return ""
    return SLOT_ROWS_EVICTION if num_bytes <= SLOT_ROWS_MAX_BYTES else ""
