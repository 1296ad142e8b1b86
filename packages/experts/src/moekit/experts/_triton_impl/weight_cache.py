"""How the grouped GEMMs' weight loads use L2.

Each weight tile is read by the few programs of one expert's m-tiles that run side by side, then
not again in the call, while the rows a call writes (GEMM1's activated rows, GEMM2's slot rows)
are read back by the next kernel. ``WEIGHT_EVICTION`` is the ``eviction_policy`` of the weight
loads that go through pointers (descriptor loads take none): ``"evict_first"`` asks L2 to drop
weight lines before those rows, ``""`` leaves the default.
"""

WEIGHT_EVICTION = ""
